#!/usr/bin/env bash
# Train several recipes at seeds 0, 1 and 2 all at once on one GPU machine, then write their raw outputs on
# clean and corrupted films (experiments/shift_outputs.py) for experiments/shift_study.py:
#
#   bash experiments/recipes_parallel.sh OUT "e15=--epochs 15" "e15_medmnistc=--epochs 15 --corruption_aug medmnistc"
#
# Each NAME=FLAGS trains OUT/checkpoints/NAME_seed{0,1,2}.pth (histories beside them); the outputs go to OUT.
# PYTHON (default .venv/bin/python) and DEVICE (default cuda) choose the interpreter and the device.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bash experiments/recipes_parallel.sh OUT NAME=FLAGS...}"
shift
PY="${PYTHON:-.venv/bin/python}"
mkdir -p "$OUT/checkpoints"
pids=()
for recipe in "$@"; do
    name="${recipe%%=*}"
    read -r -a flags <<< "${recipe#*=}"
    for seed in 0 1 2; do
        OMP_NUM_THREADS=1 "$PY" task1/train.py --seed "$seed" --device "${DEVICE:-cuda}" "${flags[@]}" \
            --out "$OUT/checkpoints/${name}_seed${seed}.pth" > "$OUT/checkpoints/${name}_seed${seed}.log" 2>&1 &
        pids+=($!)
    done
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
tail -n 2 "$OUT"/checkpoints/*.log
[ "$failed" = 0 ] || { echo "recipes_parallel: a training run failed (logs in $OUT/checkpoints)" >&2; exit 1; }
"$PY" experiments/shift_outputs.py --device "${DEVICE:-cuda}" --out "$OUT" --checkpoints "$OUT"/checkpoints/*_seed?.pth
