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
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
exec .venv/bin/python -m pytest -m "" "$@"
