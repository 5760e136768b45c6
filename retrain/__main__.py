"""`python -m retrain` runs the retrain command."""

from retrain.cli.retrain_command import run_main

run_main()
