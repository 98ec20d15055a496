#!/usr/bin/env bash
# Set everything up, then run the whole test suite offline: the quick tests and those marked slow
# or browser (plain `pytest` after set-up runs the quick ones alone). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
exec .venv/bin/python -m pytest -m "" "$@"
