#!/usr/bin/env python3
"""How well `retrain audit` finds planted problems, and what it costs against a cached run.

  python scripts/benchmark_audit.py WORK_DIR [--per_class 300] [--set digits|textures|photos]
  retrain audit --image_dir WORK_DIR/planted --output_dir WORK_DIR/audit1 \
      --bottleneck_dir WORK_DIR/cache
  python scripts/benchmark_audit.py WORK_DIR --score WORK_DIR/audit1/audit.json
  python scripts/benchmark_audit.py WORK_DIR --reference        (LogisticRegression reference)
  python scripts/benchmark_audit.py WORK_DIR --near_duplicates  (the duplicate search alone)

1. Writes the MNIST digits (scripts/make_example_dataset.py) into WORK_DIR/clean, then a copy,
   WORK_DIR/planted, with problems whose answers are known (WORK_DIR/planted_truth.json):
   - 4% of the images moved into a wrong class's folder (label errors);
   - test images copied byte for byte into training under new names (exact leaks: the new
     name is chosen so that data/split.py puts the copy in training);
   - images re-encoded as JPEG (quality 60-85), resized (0.75x-1.5x) or cropped by 1-2
     pixels a side, under new names (near duplicates; about half land in another split).
   --set textures: 32x32 photo tiles instead; --set photos: crops of scikit-image's photos at
   96-480 pixels, JPEG (make_photos), where a resized copy is a photo saved smaller.
2. `retrain audit` on WORK_DIR/planted (it computes the bottleneck cache the first time);
   --score prints the recall and precision of its audit.json against the truth.
3. --reference writes WORK_DIR/vectors.npz from the bottleneck cache (write_vectors) and runs
   the issue's reference on it: simple confident learning on scikit-learn LogisticRegression
   out-of-fold probabilities, ranked by self-confidence; --near_duplicates scores only the
   duplicate search on the same vectors. BENCHMARKS.md, "Data audit", has the numbers.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_sets  # noqa: E402  pylint: disable=wrong-import-position

from retrain.data import split  # noqa: E402  pylint: disable=wrong-import-position

LABEL_ERROR_SHARE = 0.04
EXACT_LEAKS = 20
NEAR_DUPLICATES = 30  # 10 each of re-encoded, resized, cropped
SEED = 0


def _split_of(relative_path):
    return split.split_name(relative_path, 10, 10)


def _name_in_split(folder_label, stem, suffix, wanted, rng):
    """A new file name "stem_copyN.suffix" whose split (by data/split.py's hash) is `wanted`."""
    while True:
        name = f"{stem}_copy{rng.randrange(10**6)}{suffix}"
        if _split_of(f"{folder_label}/{name}") == wanted:
            return name


def _images(folder):
    return sorted(f"{label}/{name}" for label in sorted(os.listdir(folder))
                  for name in sorted(os.listdir(os.path.join(folder, label))))


PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina")
PHOTOS_PER_CLASS = 50


def make_photos(out_dir, per_class=PHOTOS_PER_CLASS):
    """Photo-sized pictures: per scikit-image photo (a class), crops of 20-45% of its shorter
    side that overlap each other by less than 40% (IoU) (distinct pictures of one scene), each
    scaled so its longer side is 96-480 pixels and saved as a JPEG (quality 90)."""
    import skimage.data  # pylint: disable=import-outside-toplevel
    rng = random.Random(SEED)
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        photo = Image.fromarray(photo[..., :3] if photo.ndim == 3 else photo).convert("RGB")
        width, height = photo.size
        boxes = []
        for _ in range(5000):
            if len(boxes) == per_class:
                break
            side = rng.uniform(0.2, 0.45) * min(width, height)
            box_width = min(width, round(side * rng.uniform(0.8, 1.25)))
            box_height = min(height, round(side))
            left, top = rng.randrange(width - box_width + 1), rng.randrange(height - box_height + 1)
            box = (left, top, left + box_width, top + box_height)
            if all(_overlap(box, other) < 0.4 for other in boxes):
                boxes.append(box)
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        for index, box in enumerate(boxes):
            crop = photo.crop(box)
            scale = rng.randint(96, 480) / max(crop.size)
            crop = crop.resize((round(crop.width * scale), round(crop.height * scale)),
                               Image.LANCZOS)
            crop.save(os.path.join(out_dir, name, f"{name}_{index:03d}.jpg"), quality=90)


def _overlap(box, other):
    """Intersection over union of two (left, top, right, bottom) boxes."""
    width = min(box[2], other[2]) - max(box[0], other[0])
    height = min(box[3], other[3]) - max(box[1], other[1])
    if width <= 0 or height <= 0:
        return 0.0
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    return width * height / (area(box) + area(other) - width * height)


def plant(clean_dir, planted_dir):
    """Copies clean_dir to planted_dir with problems planted; returns the truth (a dict)."""
    rng = random.Random(SEED)
    shutil.rmtree(planted_dir, ignore_errors=True)
    shutil.copytree(clean_dir, planted_dir)
    originals = _images(planted_dir)
    labels = sorted(os.listdir(planted_dir))
    shuffled = originals[:]
    rng.shuffle(shuffled)
    count = round(LABEL_ERROR_SHARE * len(originals))
    moved, taken = [], set()
    for relative in shuffled[:count]:
        given = relative.split("/")[0]
        wrong = rng.choice([label for label in labels if label != given])
        target = f"{wrong}/{relative.split('/')[1]}"
        os.rename(os.path.join(planted_dir, relative), os.path.join(planted_dir, target))
        moved.append({"path": target, "true": given, "given": wrong})
        taken.add(relative)
    untouched = [relative for relative in shuffled[count:]]
    tests = [relative for relative in untouched if _split_of(relative) == "testing"]
    exact = []
    for relative in tests[:EXACT_LEAKS]:
        label, name = relative.split("/")
        stem, suffix = os.path.splitext(name)
        copy = f"{label}/{_name_in_split(label, stem, suffix, 'training', rng)}"
        shutil.copyfile(os.path.join(planted_dir, relative), os.path.join(planted_dir, copy))
        exact.append({"paths": [relative, copy], "leak": True})
    near = []
    others = [relative for relative in untouched if relative not in set(tests[:EXACT_LEAKS])]
    for index, relative in enumerate(others[:NEAR_DUPLICATES]):
        label, name = relative.split("/")
        stem = os.path.splitext(name)[0]
        original_split = _split_of(relative)
        # Half the copies go to another split than the original: leaks.
        wanted = ((original_split if index % 2 else
                   ("testing" if original_split == "training" else "training")))
        kind = ("reencoded", "resized", "cropped")[index % 3]
        pixels = Image.open(os.path.join(planted_dir, relative))
        pixels = pixels.convert("RGB" if pixels.mode in ("RGB", "RGBA", "P") else "L")
        width, height = pixels.size
        suffix = ".png"
        if kind == "reencoded":
            suffix = ".jpg"
        elif kind == "resized":
            factor = rng.choice([0.75, 1.25, 1.5])
            pixels = pixels.resize((round(width * factor), round(height * factor)),
                                   Image.BILINEAR)
        else:
            left, top = rng.randint(1, 2), rng.randint(1, 2)
            pixels = pixels.crop((left, top, width - rng.randint(1, 2),
                                  height - rng.randint(1, 2)))
        copy = f"{label}/{_name_in_split(label, stem, suffix, wanted, rng)}"
        if suffix == ".jpg":
            pixels.save(os.path.join(planted_dir, copy), quality=rng.randint(60, 85))
        else:
            pixels.save(os.path.join(planted_dir, copy))
        near.append({"paths": [relative, copy], "kind": kind,
                     "leak": _split_of(copy) != original_split})
    truth = {"label_errors": moved, "exact": exact, "near": near, "images": len(_images(planted_dir))}
    with open(planted_dir + "_truth.json", "w", encoding="utf-8") as truth_file:
        json.dump(truth, truth_file, indent=1)
    return truth


def score(truth, audit):
    """Precision and recall of audit.json's lists against the planted truth (a dict)."""
    bad = {item["path"] for item in truth["label_errors"]}
    count = len(bad)
    flagged = [issue["path"] for issue in audit["label_issues"]]
    scores = {}
    for name, top in (("N", count), ("2N", 2 * count)):
        hits = sum(path in bad for path in flagged[:top])
        scores[f"label_recall_{name}"] = hits / count
        scores[f"label_precision_{name}"] = hits / max(1, len(flagged[:top]))
    groups = [set(group["paths"]) for group in audit["duplicates"]]
    for kind in ("exact", "near"):
        planted = truth[kind]
        found = [any(set(item["paths"]) <= group for group in groups) for item in planted]
        scores[f"{kind}_recall"] = sum(found) / len(planted)
        leaks = [hit for hit, item in zip(found, planted) if item["leak"]]
        scores[f"{kind}_leak_recall"] = sum(leaks) / max(1, len(leaks))
    planted_pairs = [set(item["paths"]) for item in truth["exact"] + truth["near"]]
    scores["false_groups"] = sum(not any(pair <= group for pair in planted_pairs)
                                 for group in groups)
    scores["groups"] = len(groups)
    return scores


def write_vectors(planted_dir, bottleneck_dir, vectors_file):
    """Writes vectors_file (.npz): the planted set's bottlenecks as retrain computes them
    (read from bottleneck_dir, computed there first if missing), with "features" [n, D],
    "labels" [n] (class indices), "rel" [n] (relative paths), "keys" [n] (content keys) and
    "splits" [n], in the order of a run (training, validation, testing)."""
    # pylint: disable=import-outside-toplevel
    from retrain import pipeline, preflight
    from retrain.config import RetrainConfig
    from retrain.features import bottlenecks
    config = RetrainConfig(image_dir=planted_dir, output_dir=os.path.dirname(vectors_file),
                           bottleneck_dir=bottleneck_dir).resolved()
    checked = preflight.check_run(config)
    vectors = bottlenecks.get_bottlenecks(pipeline.in_split_order(checked.splits),
                                          pipeline.resolve(config), config.bottleneck_dir, None,
                                          config.max_image_pixels)
    split_of = {image.relative_path: name for name, images in checked.splits.items()
                for image in images}
    images = vectors.image_files
    np.savez(vectors_file, features=np.asarray(vectors.features, np.float32),
             labels=np.array([image.label_index for image in images]),
             rel=np.array([image.relative_path for image in images]),
             keys=np.array([image.content_key for image in images], dtype=object),
             splits=np.array([split_of[image.relative_path] for image in images]))
    return vectors_file


def near_duplicates(truth, planted_dir, vectors_file):
    """Scores of duplicates.find_duplicates alone on the saved bottlenecks (no label check):
    for trying near-duplicate rules without a retrain audit run."""
    from retrain.audit import duplicates  # pylint: disable=import-outside-toplevel
    data = np.load(vectors_file, allow_pickle=True)
    paths = list(data["rel"])
    start = time.monotonic()
    groups = duplicates.find_duplicates(list(data["keys"]), data["features"],
                                        [os.path.join(planted_dir, path) for path in paths])
    seconds = time.monotonic() - start
    audit = {"label_issues": [],
             "duplicates": [{"paths": [paths[row] for row in group.rows]} for group in groups]}
    scores = {key: value for key, value in score(truth, audit).items()
              if not key.startswith("label")}
    found = [any(set(item["paths"]) <= set(group["paths"]) for group in audit["duplicates"])
             for item in truth["near"]]
    for kind in ("reencoded", "resized", "cropped"):
        scores[f"near_found_{kind}"] = sum(hit for hit, item in zip(found, truth["near"])
                                           if item["kind"] == kind)
    return scores, seconds


def reference(truth, vectors_file):
    """The issue's reference: scikit-learn LogisticRegression out-of-fold probabilities
    (5 stratified folds), ranked by self-confidence among the images another class outscores.

    Made practical on a loaded 2-core machine (on the raw 1280-d vectors it did not finish in
    10 minutes): the same 64 whitened principal components the audit's own layer uses,
    lbfgs with at most 200 iterations, C=1, BLAS on one thread. vectors_file: write_vectors's
    .npz.
    """
    # pylint: disable=import-outside-toplevel
    import threadpoolctl
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from retrain.audit import label_issues
    data = np.load(vectors_file, allow_pickle=True)
    features, labels, paths = data["features"], data["labels"], list(data["rel"])
    start = time.monotonic()
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        whitened = label_issues.principal_components(
            label_issues._standardize(features.astype(np.float32)),  # pylint: disable=protected-access
            label_issues.COMPONENTS, whiten=True)
        probabilities = cross_val_predict(
            LogisticRegression(C=1.0, max_iter=200), whitened, labels,
            cv=StratifiedKFold(5, shuffle=True, random_state=SEED), method="predict_proba")
    seconds = time.monotonic() - start
    self_confidence = probabilities[np.arange(len(labels)), labels]
    suspects = np.flatnonzero(probabilities.argmax(axis=1) != labels)
    order = suspects[np.argsort(self_confidence[suspects])]
    audit = {"label_issues": [{"path": paths[row]} for row in order], "duplicates": []}
    return {key: value for key, value in score(truth, audit).items() if key.startswith("label")}, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work_dir")
    parser.add_argument("--per_class", type=int, default=300)
    parser.add_argument("--set", default="digits", choices=["digits", "textures", "photos"],
                        help="digits: MNIST (28x28); textures: 32x32 tiles of scikit-image's "
                        "photos (scripts/reference_sets.py), the hard case for resized "
                        f"copies; photos: {PHOTOS_PER_CLASS} crops of each of {len(PHOTOS)} "
                        "scikit-image photos at 96-480 pixels, JPEG, like users' photos")
    parser.add_argument("--score", help="an audit.json of the planted set to score")
    parser.add_argument("--reference", action="store_true",
                        help="run the LogisticRegression reference on the planted set's "
                        "bottlenecks (WORK_DIR/vectors.npz, written from --bottleneck_dir first)")
    parser.add_argument("--near_duplicates", action="store_true",
                        help="score only the near-duplicate search on WORK_DIR/vectors.npz "
                        "(written from --bottleneck_dir first)")
    parser.add_argument("--bottleneck_dir", help="the cache `retrain audit` used (default "
                        "WORK_DIR/cache)")
    args = parser.parse_args()
    clean = os.path.join(args.work_dir, "clean")
    if not os.path.isdir(clean) and args.set == "textures":
        reference_sets.ensure("textures", clean)
    if not os.path.isdir(clean) and args.set == "photos":
        make_photos(clean)
    if not os.path.isdir(clean):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_example_dataset.py")
        subprocess.run([sys.executable, script, clean, "--per_class", str(args.per_class),
                        "--holdout", "0"], check=True)
    planted = os.path.join(args.work_dir, "planted")
    if args.score or args.reference or args.near_duplicates:
        with open(planted + "_truth.json", encoding="utf-8") as truth_file:
            truth = json.load(truth_file)
    if args.reference or args.near_duplicates:
        vectors_file = os.path.join(args.work_dir, "vectors.npz")
        if not os.path.exists(vectors_file):
            write_vectors(planted, args.bottleneck_dir or os.path.join(args.work_dir, "cache"),
                          vectors_file)
        scores, seconds = (reference(truth, vectors_file) if args.reference else
                           near_duplicates(truth, planted, vectors_file))
        print(json.dumps({**scores, "seconds": round(seconds, 1)}, indent=1))
        return
    if args.score:
        with open(args.score, encoding="utf-8") as audit_file:
            print(json.dumps(score(truth, json.load(audit_file)), indent=1))
        return
    truth = plant(clean, planted)
    print(f"Planted {len(truth['label_errors'])} label errors, {len(truth['exact'])} exact and "
          f"{len(truth['near'])} near duplicates in {truth['images']} images.")


if __name__ == "__main__":
    main()
