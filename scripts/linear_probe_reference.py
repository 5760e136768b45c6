#!/usr/bin/env python3
"""How good can a linear head be? retrain's new layer against a tuned logistic regression.

  python scripts/linear_probe_reference.py --image_dir DIR [--bottleneck_dir DIR]
  python scripts/linear_probe_reference.py --sets digits,textures,faces,sk_digits \\
      --work_dir /tmp/probe --seeds 0,1,2,3,4 [--markdown table.md]

Uses the same split and the same cached bottlenecks as `retrain` with those flags (the cache
is filled if needed), fits scikit-learn's LogisticRegression on the training split with C
chosen on the validation split (by accuracy, ties broken by log-loss; and by log-loss alone),
and trains the new layer on the same vectors with several seeds: "before" with retrain.py's
objective (--weight_decay=0 --label_smoothing=0, the defaults until issue 24) and "after"
with RetrainConfig's defaults (weight decay chosen on validation, label smoothing). It prints
test accuracies (median over seeds and the range), the weight decays chosen, and the seconds
of both trainings, measured alternately in this one process: the machine is shared, so only
their ratio means much. --sets names image sets of scripts/reference_sets.py, written under
--work_dir if missing. Needs scikit-learn (and scikit-image for textures and faces).
"""

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from retrain import pipeline  # pylint: disable=wrong-import-position
from retrain.config import RetrainConfig  # pylint: disable=wrong-import-position
from retrain.data import dataset  # pylint: disable=wrong-import-position
from retrain.data import split  # pylint: disable=wrong-import-position
from retrain.features import bottlenecks  # pylint: disable=wrong-import-position
from retrain.features import modules  # pylint: disable=wrong-import-position
from retrain.training import train  # pylint: disable=wrong-import-position
import reference_sets  # pylint: disable=wrong-import-position

# LogisticRegression's inverse regularization strengths tried, from strong to weak.
STRENGTHS = tuple(10.0 ** exponent for exponent in np.arange(-3.0, 2.01, 0.5))


def load_split_bottlenecks(image_dir, module_handle, bottleneck_dir, validation, testing):
    """({split name: (features float32 [n, D], labels int32 [n])}, number of classes)."""
    module = modules.resolve_module(module_handle)
    collection = dataset.find_images(image_dir)
    splits = split.split_images(collection.images, collection.labels, validation, testing)
    vectors = bottlenecks.get_bottlenecks(pipeline.in_split_order(splits), module,
                                          bottleneck_dir, None, RetrainConfig.max_image_pixels)
    if vectors.failed:  # as pipeline.run does: unreadable images drop out, then split again
        splits = split.split_images(vectors.image_files, collection.labels, validation, testing)
    arrays = {name: (np.asarray(features), labels)
              for name, (features, labels, _) in pipeline.split_arrays(vectors, splits).items()}
    return arrays, len(collection.labels)


def fit_logistic_regression(arrays):
    """{"accuracy": (C, test accuracy), "log_loss": (C, test accuracy)}: C chosen on the
    validation split by accuracy (ties: the lower log-loss) or by log-loss alone."""
    # pylint: disable=import-outside-toplevel
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    scores = []
    for strength in STRENGTHS:
        model = LogisticRegression(C=strength, max_iter=3000).fit(*arrays["training"])
        features, labels = arrays["validation"]
        scores.append((strength, model.score(features, labels),
                       log_loss(labels, model.predict_proba(features), labels=model.classes_),
                       model.score(*arrays["testing"])))
    by_accuracy = max(scores, key=lambda row: (row[1], -row[2]))
    by_log_loss = min(scores, key=lambda row: row[2])
    return {"accuracy": (by_accuracy[0], by_accuracy[3]),
            "log_loss": (by_log_loss[0], by_log_loss[3])}


def head_accuracy(arrays, num_classes, settings):
    """(test accuracy, seconds of train_head, History.regularization)."""
    started = time.perf_counter()
    head, history = train.train_head(*arrays["training"], *arrays["validation"], num_classes,
                                     settings)
    seconds = time.perf_counter() - started
    features, labels = arrays["testing"]
    accuracy = float(np.mean(np.argmax(head.probabilities(features), axis=1) == labels))
    return accuracy, seconds, history.regularization


def measure(name, arrays, num_classes, seeds):
    """One row of the table: the logistic regression, then both heads at every seed."""
    references = fit_logistic_regression(arrays)
    after_settings = pipeline.training_settings(RetrainConfig())
    before_settings = dataclasses.replace(after_settings, weight_decay=0.0, label_smoothing=0.0)
    row = {"set": name, "training": len(arrays["training"][1]),
           "validation": len(arrays["validation"][1]), "test": len(arrays["testing"][1]),
           "references": references, "before": [], "after": [], "decays": [],
           "before_seconds": [], "after_seconds": []}
    for seed in seeds:
        for which, settings in (("before", before_settings), ("after", after_settings)):
            accuracy, seconds, regularization = head_accuracy(
                arrays, num_classes, dataclasses.replace(settings, seed=seed))
            row[which].append(accuracy)
            row[f"{which}_seconds"].append(seconds)
            if which == "after":
                row["decays"].append(regularization["weight_decay"])
        print(f"{name} seed {seed}: before {row['before'][-1]:.2%} ({row['before_seconds'][-1]:.1f}"
              f" s), after {row['after'][-1]:.2%} ({row['after_seconds'][-1]:.1f} s, weight "
              f"decay {row['decays'][-1]:g})", flush=True)
    return row


def _spread(values):
    values = 100 * np.asarray(values)
    return f"{np.median(values):.1f} ({values.min():.1f}-{values.max():.1f})"


def format_table(rows):
    lines = ["| set | train / val / test images | LogisticRegression, C by val accuracy | "
             "C by val log-loss | before: median (min-max) | after: median (min-max) | "
             "after - best LR (median) | weight decays chosen | after / before time |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for row in rows:
        (c_accuracy, by_accuracy), (c_loss, by_loss) = (row["references"]["accuracy"],
                                                        row["references"]["log_loss"])
        best = max(by_accuracy, by_loss)
        ratio = np.median(np.array(row["after_seconds"]) / np.array(row["before_seconds"]))
        decays = ", ".join(f"{decay:g}" for decay in row["decays"])
        lines.append(
            f"| {row['set']} | {row['training']} / {row['validation']} / {row['test']} | "
            f"{100 * by_accuracy:.1f} (C={c_accuracy:.3g}) | {100 * by_loss:.1f} "
            f"(C={c_loss:.3g}) | {_spread(row['before'])} | {_spread(row['after'])} | "
            f"{100 * (np.median(row['after']) - best):+.1f} | {decays} | {ratio:.2f}x |")
    seconds = [(np.median(row["before_seconds"]), np.median(row["after_seconds"]))
               for row in rows]
    lines.append("")
    lines.append("Median seconds of train_head, before / after: " + ", ".join(
        f"{row['set']} {before:.1f} / {after:.1f}" for row, (before, after) in zip(rows, seconds)))
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image_dir", help="one image folder (else --sets)")
    parser.add_argument("--sets", default="", help=f"comma-separated, of {sorted(reference_sets.SETS)}")
    parser.add_argument("--work_dir", default="linear_probe",
                        help="where --sets and their bottlenecks are written")
    parser.add_argument("--output_dir", default="retrain_output")
    parser.add_argument("--bottleneck_dir", default=None)
    parser.add_argument("--tfhub_module", default="efficientnet_lite0")
    parser.add_argument("--validation_percentage", type=int, default=10)
    parser.add_argument("--testing_percentage", type=int, default=10)
    parser.add_argument("--seeds", default="0", help="comma-separated --random_seed values")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    folders = reference_sets.folders_to_measure(
        parser, args.image_dir,
        args.bottleneck_dir or os.path.join(args.output_dir, "bottlenecks"), args.sets,
        args.work_dir)
    rows = []
    for name, image_dir, bottleneck_dir in folders:
        arrays, num_classes = load_split_bottlenecks(image_dir, args.tfhub_module, bottleneck_dir,
                                                     args.validation_percentage,
                                                     args.testing_percentage)
        rows.append(measure(name, arrays, num_classes, seeds))
    table = format_table(rows)
    print(table)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as out:
            out.write(table)


if __name__ == "__main__":
    main()
