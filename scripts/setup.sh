#!/usr/bin/env bash
# Make .venv with every dependency and the project itself (editable), and place the dataset.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 \
    | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e . 2>&1 \
    | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, torchvision, medmnist, faiss, pytorch_grad_cam, transformers" \
    || { echo "error: dependencies did not install; see the pip output above" >&2; exit 1; }
# The dataset host may be unreachable: use the local copy beside the repository when there is one;
# otherwise the scripts download pneumoniamnist.npz into data/ on first use.
if [ ! -f data/pneumoniamnist.npz ] && [ -f ../shared/data/pneumoniamnist.npz ]; then
    mkdir -p data && cp ../shared/data/pneumoniamnist.npz data/
fi
