"""One image from a cold start to the printed result: label_image --tflite_model as it runs
now (no TensorFlow import) against the code before it (which imported TensorFlow), in one run,
alternating so that both see the same machine load.

Usage:
  git worktree add /tmp/before <commit before the TensorFlow-free path>
  python scripts/benchmark_light_label_image.py --tflite_model m.tflite --image x.jpg \
      --before_checkout /tmp/before [--rounds 5] [--light_python .venv-light/bin/python]

Each run is a fresh `python -m retrain.cli.label_image_command ...` process, timed from
start to exit. --light_python also times a venv with only requirements-light.txt installed.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time


def timed_run(python, args, cwd=None, env=None):
    """Seconds from process start to exit; fails if the command fails."""
    start = time.perf_counter()
    completed = subprocess.run([python, "-m", "retrain.cli.label_image_command", *args],
                               cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"failed: {completed.stderr}")
    return seconds, completed.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflite_model", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--before_checkout", required=True,
                        help="a checkout of the code before the TensorFlow-free path")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--light_python", help="python of a venv with requirements-light.txt")
    options = parser.parse_args()
    args = [f"--tflite_model={os.path.abspath(options.tflite_model)}",
            os.path.abspath(options.image)]
    # The checkout's own retrain package first on the path (-m runs from cwd).
    before_env = dict(os.environ, PYTHONPATH=os.path.abspath(options.before_checkout))
    variants = {"now": (sys.executable, None, None),
                "before": (sys.executable, options.before_checkout, before_env)}
    if options.light_python:
        variants["light venv"] = (options.light_python, None, None)
    times = {name: [] for name in variants}
    outputs = {}
    for _ in range(options.rounds):
        for name, (python, cwd, env) in variants.items():
            seconds, outputs[name] = timed_run(python, args, cwd, env)
            times[name].append(seconds)
    for name, values in times.items():
        print(f"{name:>10}: median {statistics.median(values):.2f} s "
              f"(runs: {', '.join(f'{value:.2f}' for value in values)})")
    before = statistics.median(times["before"])
    for name in variants:
        if name != "before":
            print(f"{name} is {before / statistics.median(times[name]):.1f}x faster than before")
    print("same output:", len({output for output in outputs.values()}) == 1)


if __name__ == "__main__":
    main()
