#!/usr/bin/env bash
# The main job, end to end, into its own run folder (runs/<name>/, ignored by git): set up; train,
# evaluate and explain the classifier; index and query the archive; write Task 2 reports (with MedGemma
# when it can be loaded); render the Markdown reports from the results. The committed models/ and
# reports/ are not touched (a maintainer publishes a run with scripts/publish_run.sh).
#
#   bash scripts/run_all.sh                       # everything, training included (11-25 min on 2 CPU cores)
#   bash scripts/run_all.sh --skip_training       # the shipped checkpoint, evaluated (~5 min on 2 CPU cores)
#   bash scripts/run_all.sh --skip_training NAME  # ... into runs/NAME
#
# TRAIN_FLAGS (environment) adds flags to task1/train.py, e.g. a short recipe for a smoke run:
#   TRAIN_FLAGS="--epochs 1" PNEUMONIA_DATA_ROOT=/path/to/small/data bash scripts/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SKIP_TRAINING=0
if [ "${1:-}" = "--skip_training" ]; then SKIP_TRAINING=1; shift; fi
case "${1:-}" in -*) echo "usage: bash scripts/run_all.sh [--skip_training] [RUN_NAME]" >&2; exit 2;; esac
# (A bare `[ ... ] && echo` would return 1 without --skip_training and, under set -e, end the script silently.)
SUFFIX=""
if [ $SKIP_TRAINING = 1 ]; then SUFFIX="-shipped"; fi
NAME="${1:-$(date +%Y%m%d-%H%M%S)$SUFFIX}"
RUN="runs/$NAME"
if [ -e "$RUN" ]; then echo "error: $RUN exists; give another run name" >&2; exit 1; fi

step() { echo; echo "== [$(date +%H:%M:%S)] $*"; }
echo "== run folder: $RUN"
step "set-up (.venv, dependencies, data)"
bash scripts/setup.sh
export MPLBACKEND=Agg
PY=.venv/bin/python
mkdir -p "$RUN"

if [ $SKIP_TRAINING = 1 ]; then
    CHECKPOINT=models/task1_model.pth
    cp models/task1_model.pth models/task1_model_history.json "$RUN/"  # the run's report describes this model
    step "Task 1: training skipped: the shipped checkpoint $CHECKPOINT"
else
    CHECKPOINT="$RUN/task1_model.pth"
    step "Task 1: train (checkpoint -> $CHECKPOINT)"
    # shellcheck disable=SC2086  # TRAIN_FLAGS is a list of flags
    $PY task1/train.py --out "$CHECKPOINT" ${TRAIN_FLAGS:-}
fi
step "Task 1: evaluate on test (metrics, figures)"
$PY task1/evaluate.py --checkpoint "$CHECKPOINT" --out "$RUN"
step "Task 3: index the train+val embeddings (also the reference for flagging out-of-distribution inputs)"
$PY task3/build_index.py --checkpoint "$CHECKPOINT" --out "$RUN/task3_index.faiss"
step "Task 1: Grad-CAM on test images 0, 20, 70, on the sample X-rays, and its deletion test on val and test"
$PY task1/gradcam.py --checkpoint "$CHECKPOINT" --index "$RUN" --out "$RUN" --indices 0 20 70
if compgen -G "../shared/samples/*/*.jpeg" > /dev/null; then
    $PY task1/gradcam.py --checkpoint "$CHECKPOINT" --index "$RUN" --out "$RUN" --images ../shared/samples/*/*.jpeg
fi
$PY task1/gradcam.py --checkpoint "$CHECKPOINT" --out "$RUN" --faithfulness --split val
$PY task1/gradcam.py --checkpoint "$CHECKPOINT" --out "$RUN" --faithfulness --split test
step "Task 3: query test images 0, 20, 70, evaluate retrieval on test"
$PY task3/query.py --checkpoint "$CHECKPOINT" --index "$RUN" --out "$RUN" --indices 0 20 70
$PY task3/query.py --checkpoint "$CHECKPOINT" --index "$RUN" --out "$RUN" --evaluate
step "Task 2: reports for test images 0, 20, 70 (MedGemma when it can be loaded, else without narrative)"
$PY task2/generate_reports.py --checkpoint "$CHECKPOINT" --index "$RUN" --out "$RUN/task2" --indices 0 20 70 --prompt all
step "reports: Markdown rendered from this run's results"
$PY scripts/render_reports.py --run "$RUN"
step "done: everything is in $RUN (open $RUN/task1_classification_report.md)"
