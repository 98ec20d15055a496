#!/usr/bin/env bash
# The main job, end to end: set up, train the classifier, evaluate it on test, explain it with Grad-CAM.
# About 15 minutes on a 2-core CPU (training is 12 of them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
PY=.venv/bin/python

echo "== Task 1: train (checkpoint -> models/task1_model.pth)"
$PY task1/train.py
echo "== Task 1: evaluate on test (metrics and figures -> reports/)"
$PY task1/evaluate.py
echo "== Task 1: Grad-CAM on test images 0, 20, 70 and on the sample X-rays"
$PY task1/gradcam.py --indices 0 20 70
if compgen -G "../shared/samples/*/*.jpeg" > /dev/null; then
    $PY task1/gradcam.py --images ../shared/samples/*/*.jpeg
fi
$PY task1/gradcam.py --faithfulness --split test
