"""`python -m retrain` runs the retrain command."""

from retrain.cli import run_main

run_main()
