#!/usr/bin/env bash
# Train one recipe at seeds 0, 1 and 2 and score the three on val, where recipes are compared:
#
#   bash experiments/recipe_seeds.sh e15 --epochs 15          # models/seeds/e15_seed{0,1,2}.pth
#
# A finished seed is skipped and an interrupted one resumes from its last epoch, so the command can be
# rerun after a kill. Writes experiments/results/NAME_val/ and copies the training histories into
# experiments/histories/. Test is read separately, once per finished recipe:
#   python experiments/seed_study.py --checkpoints models/seeds/NAME_seed{0,1,2}.pth --out experiments/results/NAME
set -euo pipefail
cd "$(dirname "$0")/.."
NAME="${1:?usage: bash experiments/recipe_seeds.sh NAME [train.py flags]}"
shift
for seed in 0 1 2; do
    out="models/seeds/${NAME}_seed${seed}.pth"
    resume=()
    if [ -f "${out%.pth}.resume.pth" ]; then
        resume=(--resume)
    elif [ -f "$out" ]; then
        echo "recipe_seeds: $out is there, skipped"
        continue
    fi
    .venv/bin/python task1/train.py --seed "$seed" --out "$out" "${resume[@]}" "$@"
    cp "models/seeds/${NAME}_seed${seed}_history.json" experiments/histories/
done
.venv/bin/python experiments/seed_study.py --split val --out "experiments/results/${NAME}_val" \
    --checkpoints "models/seeds/${NAME}_seed0.pth" "models/seeds/${NAME}_seed1.pth" "models/seeds/${NAME}_seed2.pth"
