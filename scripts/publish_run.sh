#!/usr/bin/env bash
# For maintainers: make a run the project's published results. Copies the run's results, figures and
# Task 2 reports into reports/, its index into models/, and its checkpoint and history into models/
# only when they differ from the shipped ones (each new checkpoint adds 45 MB to every clone: publish a
# trained run only when the recipe or the data changed). Then renders reports/*.md from the published
# files. Review `git status` and `git diff`, then commit.
#
#   bash scripts/publish_run.sh runs/20261201-shipped
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:?usage: bash scripts/publish_run.sh runs/NAME}"
RUN="${RUN%/}"
for f in task1_model.pth task1_model_history.json task1_metrics_test.json task3_index.faiss task3_index.json; do
    [ -f "$RUN/$f" ] || { echo "error: $RUN/$f is missing; is $RUN a finished run of scripts/run_all.sh?" >&2; exit 1; }
done
if cmp -s "$RUN/task1_model.pth" models/task1_model.pth; then
    echo "checkpoint: the shipped one (unchanged)"
else
    echo "checkpoint: NEW, copied to models/task1_model.pth (+45 MB in history when committed)"
    cp "$RUN/task1_model.pth" models/task1_model.pth
fi
cp "$RUN/task1_model_history.json" "$RUN/task3_index.faiss" "$RUN/task3_index.json" models/
mkdir -p reports/figures reports/task2
cp "$RUN"/*.json "$RUN"/*.csv "$RUN"/*.md reports/
rm -f reports/task1_model_history.json reports/task3_index.json
cp "$RUN"/figures/*.png reports/figures/
if [ -d "$RUN/task2" ]; then cp "$RUN"/task2/* reports/task2/; fi
.venv/bin/python scripts/render_reports.py --results reports --models models --out reports
git status --short models reports
