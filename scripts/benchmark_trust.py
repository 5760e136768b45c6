#!/usr/bin/env python3
"""Calibration and "unknown" on held-out classes, measured on cached bottlenecks.

  python scripts/benchmark_trust.py --sets digits --holdout 8,9 [--markdown out.md]
  python scripts/benchmark_trust.py --image_dir example/digits \
      --bottleneck_dir example/output/bottlenecks --holdout 8,9

The classes in --holdout are left out of training: the new layer is trained (retrain's
defaults) on the others' training split, the temperature and the unknown thresholds are fitted
on their validation split (training.trust, as a run does), and then measured:
- the expected calibration error (15 bins) on the known classes' test split, before and after
  the temperature;
- for every unknown score of training.novelty (knn at several k and bank sizes), the AUROC of
  telling the held-out classes' images (all of them: the model never saw any) from the known
  test images, the share of held-out images called unknown at the default threshold (95% of
  validation kept known), the share of known test images called unknown, and the bytes the
  export carries for it.
"""

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from retrain import pipeline
from retrain.config import RetrainConfig
from retrain.data import dataset
from retrain.data import split
from retrain.evaluation import metrics
from retrain.features import bottlenecks
from retrain.features import modules
from retrain.training import calibration
from retrain.training import novelty
from retrain.training import train
from retrain.training import trust
import reference_sets  # pylint: disable=wrong-import-position

# (method, k, bank size) rows of the table; bank size None: every training vector.
CANDIDATES = [("msp", 1, 0), ("max_logit", 1, 0), ("energy", 1, 0), ("mahalanobis", 1, 0)] + [
    ("knn", k, bank) for bank in (None, 1000, 200) for k in (1, 5, 10)]


def load(image_dir, module_handle, bottleneck_dir):
    """(features float32 [n, D], labels int [n], split names [n], label names)."""
    module = modules.resolve_module(module_handle)
    collection = dataset.find_images(image_dir)
    splits = split.split_images(collection.images, collection.labels, 10, 10)
    vectors = bottlenecks.get_bottlenecks(pipeline.in_split_order(splits), module,
                                          bottleneck_dir, None, RetrainConfig.max_image_pixels)
    if vectors.failed:
        splits = split.split_images(vectors.image_files, collection.labels, 10, 10)
    arrays = pipeline.split_arrays(vectors, splits)
    features = np.concatenate([np.asarray(arrays[name][0]) for name in split.SPLITS])
    labels = np.concatenate([arrays[name][1] for name in split.SPLITS])
    names = np.concatenate([[name] * len(arrays[name][1]) for name in split.SPLITS])
    return features, labels, names, collection.labels


def measure(set_name, features, labels, split_names, label_names, holdout, seed=0):
    held = np.isin(labels, [label_names.index(name) for name in holdout])
    known_classes = [index for index in range(len(label_names)) if label_names[index] not in holdout]
    remap = {old: new for new, old in enumerate(known_classes)}
    known_labels = np.array([remap.get(int(label), -1) for label in labels])
    data = {}
    for name in split.SPLITS:
        rows = (~held) & (split_names == name)
        data[name] = (features[rows], known_labels[rows], [None] * int(rows.sum()))
    settings = pipeline.training_settings(RetrainConfig(random_seed=seed))
    head, _ = train.train_head(*data["training"][:2], *data["validation"][:2], len(known_classes),
                               dataclasses.replace(settings, log_file=None))
    fitted = trust.fit(head, data, len(known_classes), trust.TrustSettings(seed=seed))
    test_features, test_labels, _ = data["testing"]
    test_logits = calibration.logits(test_features, head)
    unknown_features = features[held]
    unknown_logits = calibration.logits(unknown_features, head)
    before = metrics.reliability(calibration.softmax(test_logits), test_labels)["ece"]
    after = metrics.reliability(calibration.softmax(test_logits, fitted.temperature),
                                test_labels)["ece"]
    accuracy = float(np.mean(test_logits.argmax(axis=1) == test_labels))
    rows = []
    for method, k, bank in CANDIDATES:
        started = time.perf_counter()
        detector = novelty.fit_detector(
            method, data["training"][0], data["training"][1], data["validation"][0],
            calibration.logits(data["validation"][0], head), len(known_classes), 0.95, k=k,
            bank_size=bank, seed=seed, temperature=fitted.temperature)
        known_scores = detector.score(test_features, test_logits)
        unknown_scores = detector.score(unknown_features, unknown_logits)
        carried = sum(array.nbytes for array in (detector.bank, detector.precision_matrix)
                      if array is not None)
        rows.append({"method": method, "k": k,
                     "bank": "-" if method != "knn" else (bank or len(data["training"][1])),
                     "auroc": novelty.auroc(known_scores, unknown_scores),
                     "caught": float(np.mean(unknown_scores > detector.threshold)),
                     "known_flagged": float(np.mean(known_scores > detector.threshold)),
                     "bytes": carried, "seconds": time.perf_counter() - started})
    return {"set": set_name, "holdout": holdout, "accuracy": accuracy,
            "temperature": fitted.temperature, "ece_before": before, "ece_after": after,
            "known_test": len(test_labels), "unknown": int(held.sum()),
            "training": len(data["training"][1]), "validation": len(data["validation"][1]),
            "rows": rows}


def format_result(result):
    lines = [f"**{result['set']}**, classes {', '.join(result['holdout'])} held out "
             f"({result['unknown']} unknown images; {result['training']} training, "
             f"{result['validation']} validation, {result['known_test']} known test images; "
             f"test accuracy {result['accuracy']:.1%}): temperature {result['temperature']:.3f}, "
             f"ECE {result['ece_before']:.4f} before, {result['ece_after']:.4f} after.", "",
             "| score | k | bank | AUROC | unknowns caught | known test called unknown | "
             "export carries |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["rows"]:
        lines.append(f"| {row['method']} | {row['k'] if row['method'] == 'knn' else '-'} | "
                     f"{row['bank']} | {row['auroc']:.3f} | {row['caught']:.1%} | "
                     f"{row['known_flagged']:.1%} | {row['bytes'] / 1e6:.2f} MB |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image_dir", help="one image folder (else --sets)")
    parser.add_argument("--sets", default="", help=f"comma-separated, of {sorted(reference_sets.SETS)}")
    parser.add_argument("--work_dir", default="trust_benchmark")
    parser.add_argument("--bottleneck_dir", default=None)
    parser.add_argument("--tfhub_module", default="efficientnet_lite0")
    parser.add_argument("--holdout", default="8,9", help="comma-separated class names to hold out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", help="also write the tables to this file")
    args = parser.parse_args()
    folders = reference_sets.folders_to_measure(
        parser, args.image_dir, args.bottleneck_dir or os.path.join(args.work_dir, "bottlenecks"),
        args.sets, args.work_dir)
    texts = []
    for name, image_dir, bottleneck_dir in folders:
        features, labels, split_names, label_names = load(image_dir, args.tfhub_module,
                                                          bottleneck_dir)
        result = measure(name, features, labels, split_names, label_names,
                         args.holdout.split(","), args.seed)
        texts.append(format_result(result))
        print(texts[-1], flush=True)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as out:
            out.write("\n".join(texts))


if __name__ == "__main__":
    main()
