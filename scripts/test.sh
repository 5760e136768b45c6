#!/usr/bin/env bash
# Sets up virtual environments (if needed) and runs the test suite.
# Usage: bash scripts/test.sh [pytest arguments]
# RETRAIN_BEAM_TESTS=0 skips the Apache Beam tests and their environment.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Apache Beam extra caps protobuf and Pillow below what requirements.txt runs with, so
# its tests run first in an environment of their own (requirements-beam.txt).
if [ "${RETRAIN_BEAM_TESTS:-1}" != 0 ]; then
    if [ ! -x .venv-beam/bin/python ]; then
        python3 -m venv .venv-beam
    fi
    .venv-beam/bin/python -m pip install --quiet --upgrade pip
    .venv-beam/bin/python -m pip install --quiet -r requirements-beam.txt -e ".[beam]"
    .venv-beam/bin/python -m pytest -q tests/features/test_beam*.py
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt -e ".[test,all-backbones]"
exec .venv/bin/python -m pytest "$@"
