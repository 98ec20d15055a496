#!/usr/bin/env bash
# Set everything up, then run the whole test suite offline: the quick tests and those marked slow
# or browser (plain `pytest` after set-up runs the quick ones alone). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The viewer's browser test drives Debian's chromium (Playwright's own browser download cannot work
# offline). Installed here when missing and we are root; elsewhere that test skips with the reason,
# except under CI=true, where a missing browser fails it.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser test (about 80 s)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
        echo "could not install chromium: the browser test will say so"
fi
# The second transformers line the requirements admit (4.56, with the hub and tokenizers it needs) as an
# overlay on .venv, for the test that loads the tiny Gemma 3 in 4-bit under both lines (tests/test_vlm.py).
if [ ! -d .venv/transformers4/transformers ]; then
    echo "installing transformers 4.56 into .venv/transformers4 for the two-line 4-bit test"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --target .venv/transformers4 \
        "transformers==4.56.*" "huggingface_hub>=0.34,<1.0" "tokenizers>=0.22,<0.23" 2>&1 | grep -v "^WARNING: Location" || true
fi
# MedMNIST-C's library (medmnistc 0.1.0), only to check pneumo/corruptions.py against it
# (tests/test_corruptions.py): without its pins (scikit-image 0.23.2, medmnist 3.0.1), which would
# downgrade the environment, and without ImageMagick, which only its unused blur module needs.
if ! .venv/bin/python -c "import medmnistc" 2>/dev/null; then
    echo "installing medmnistc (no dependencies) for the corruption test"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "medmnistc==0.1.0" "opencv-python-headless>=4.8" \
        2>&1 | grep -v "^WARNING: Location" || true
fi
echo "ruff check (pyproject.toml's [tool.ruff])"
.venv/bin/ruff check .
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
exec .venv/bin/python -m pytest -m "" "$@"
