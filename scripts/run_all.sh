#!/usr/bin/env bash
# The main job, end to end: set up; train, evaluate and explain the classifier; index and query the
# archive; write reports (with MedGemma when it can be loaded). About 25 minutes on a 2-core CPU.
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

echo "== Task 3: index train+val embeddings, query test images 0, 20, 70, evaluate retrieval on test"
$PY task3/build_index.py
$PY task3/query.py --indices 0 20 70
$PY task3/query.py --evaluate
echo "== Task 2: reports for test images 0, 20, 70 (MedGemma when it can be loaded, else without narrative)"
$PY task2/generate_reports.py --vlm auto --indices 0 20 70 --prompt all
