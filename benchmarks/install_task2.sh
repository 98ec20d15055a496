#!/usr/bin/env bash
# How Task 2's install behaves where Colab runs it: a fresh Python 3.13 environment that already holds a
# CUDA torch (as Colab's does), then `pip install -e ".[vlm]"` from a fresh clone, timed. Checks that torch
# is left as it was, that pip check is clean, and that nothing of the viewer, Milvus or the tests came along.
#
#   PY=python3.13 bash benchmarks/install_task2.sh | tee reports/install_task2.log
#
# Needs network to PyPI (torch 2.9.1 is several GB the first time); pip's cache makes a second run faster
# than a fresh machine, so the published time is from a first run.
set -euo pipefail
PY="${PY:-python3.13}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1  # no local pip settings (caps, mirrors)
git clone -q "$(cd "$(dirname "$0")/.." && pwd)" "$WORK/lab"
"$PY" -m venv "$WORK/venv"
V="$WORK/venv/bin/python"
$V -m pip install -q torch==2.9.1 torchvision==0.24.1
echo "python $($V -c 'import platform; print(platform.python_version())')"
echo "torch before: $($V -c 'import torch; print(torch.__version__)')"
cd "$WORK/lab"
start=$(date +%s)
$V -m pip install -q -e ".[vlm]"
echo "install of -e .[vlm] took $(( $(date +%s) - start )) s"
echo "torch after: $($V -c 'import torch; print(torch.__version__)')"
$V -m pip check && echo "pip check clean"
$V -c "import transformers, bitsandbytes; print('transformers', transformers.__version__, 'bitsandbytes', bitsandbytes.__version__)" 2>/dev/null
$V -m pip list 2>/dev/null | grep -iE "^(gradio|pymilvus|milvus-lite|playwright|pytest) " || echo "no viewer, Milvus or test packages"
HF_HUB_OFFLINE=1 $V task2/generate_reports.py --help > /dev/null && echo "task2/generate_reports.py --help runs"
