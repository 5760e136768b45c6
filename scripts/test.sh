#!/usr/bin/env bash
# Sets up a virtual environment in .venv (if needed) and runs the test suite.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt -e ".[test,all-backbones]"
exec .venv/bin/python -m pytest "$@"
