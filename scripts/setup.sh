#!/usr/bin/env bash
# Make .venv with every dependency and the project itself (editable), and place the dataset.
# Safe to run again: it installs only what is missing. CPU-only machines can skip the multi-GB CUDA
# build of torch: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "setup: $*"; }
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with ${PYTHON:-python3}"
    "${PYTHON:-python3}" -m venv .venv
fi
quiet_pip() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    say "installing torch and torchvision from $TORCH_INDEX_URL"
    quiet_pip torch torchvision --index-url "$TORCH_INDEX_URL"
fi
say "installing requirements.txt: the project with every optional group (the first time takes minutes: about 7.1 GB with the CUDA build of torch)"
quiet_pip -r requirements.txt
.venv/bin/python -c "import torch, torchvision, medmnist, faiss, pytorch_grad_cam, transformers, jinja2" \
    || { echo "error: dependencies did not install; see the pip output above" >&2; exit 1; }
# The dataset host may be unreachable: use the local copy beside the repository when there is one;
# otherwise the scripts download pneumoniamnist.npz into data/ on first use.
if [ ! -f data/pneumoniamnist.npz ] && [ -f ../shared/data/pneumoniamnist.npz ]; then
    say "copying ../shared/data/pneumoniamnist.npz into data/"
    mkdir -p data && cp ../shared/data/pneumoniamnist.npz data/
fi
say "ready (.venv/bin/python)"
