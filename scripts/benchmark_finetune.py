#!/usr/bin/env python3
"""Fine-tuning against the frozen head on real registry sets: BENCHMARKS.md's issue-27 table.

  python scripts/benchmark_finetune.py --sets digits,textures,sk_digits,faces,fashion \
      --work_dir /tmp/ft/bench --seeds 0 --markdown /tmp/ft/bench/table.md

For each set (scripts/reference_sets.py, cut to --per_class images per class so that runs
fit the time: ~1,500 training images) and seed, `retrain compare`'s machinery trains the rows
frozen, fine_tuned and fine_tuned_augmented of efficientnet_lite0 (default settings; the
augmented row uses compare's default distortions, --augmentation_copies of them) on one split and one bottleneck cache, and
the table gets each row's test accuracy with its N, its gain over the frozen row, and the
minutes the row's run took (every stage; the bottlenecks are cached by the frozen row, which
runs first, so the fine-tuned rows' minutes are what a rerun on cached bottlenecks costs, plus
the fine-tuning stage). The machine's load average is printed with each row: the machine is
shared, and times scale with it.
"""

import argparse
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_sets  # noqa: E402  pylint: disable=wrong-import-position

METHODS = ("frozen", "fine_tuned", "fine_tuned_augmented")


def subset(source, target, per_class):
    """Copies the first per_class images (by name) of each class folder; returns target."""
    def copy(folder):
        for label in sorted(os.listdir(source)):
            names = sorted(os.listdir(os.path.join(source, label)))[:per_class]
            os.makedirs(os.path.join(folder, label))
            for name in names:
                shutil.copy(os.path.join(source, label, name), os.path.join(folder, label, name))

    return reference_sets.write_whole(target, copy)


def run_set(name, image_dir, work_dir, seed, module, methods, copies, bottleneck_dir,
            overrides=None):
    """{method: compare.Row} for one set and seed, each method in its own compare call;
    overrides: more RetrainConfig fields (the fine-tuning settings under test)."""
    from retrain.compare import compare  # pylint: disable=import-outside-toplevel
    from retrain.config import RetrainConfig  # pylint: disable=import-outside-toplevel
    rows = {}
    for method in methods:
        config = RetrainConfig(image_dir=image_dir, random_seed=seed, augmentation_copies=copies,
                               bottleneck_dir=bottleneck_dir, **(overrides or {}))
        started = time.monotonic()
        (row,) = compare.compare(config, [module], [method],
                                 os.path.join(work_dir, f"{name}-seed{seed}-{method}"))
        row.minutes = round((time.monotonic() - started) / 60, 2)
        rows[method] = row
        print(f"ROW {name} seed={seed} {method}: accuracy {row.test_top1_accuracy} "
              f"N={row.test_count} minutes {row.minutes} load {os.getloadavg()[0]:.1f} "
              f"{row.error}", flush=True)
    return rows


def format_table(results, methods):
    """Markdown: per set, each method's median test accuracy (range over seeds), N, gain over
    frozen (median), minutes (median)."""
    lines = ["| set | images (80% train) | seeds | "
             + " | ".join(methods) + " | " + " | ".join(f"{m} - frozen" for m in methods[1:])
             + " | minutes (" + ", ".join(methods) + ") |",
             "|---|---|---|" + "---:|" * (2 * len(methods) - 1) + "---|"]
    for name, (sizes, per_seed) in results.items():
        cells = []
        for method in methods:
            values = [rows[method].test_top1_accuracy * 100 for rows in per_seed.values()
                      if rows[method].test_top1_accuracy is not None]
            spread = (f" ({min(values):.1f}-{max(values):.1f})"
                      if len(set(round(v, 1) for v in values)) > 1 else "")
            cells.append(f"{statistics.median(values):.1f}{spread}" if values else "failed")
        for method in methods[1:]:
            gains = [(rows[method].test_top1_accuracy - rows["frozen"].test_top1_accuracy) * 100
                     for rows in per_seed.values()
                     if rows[method].test_top1_accuracy is not None]
            cells.append(f"{statistics.median(gains):+.1f}" if gains else "–")
        minutes = ", ".join(f"{statistics.median(rows[m].minutes for rows in per_seed.values()):.1f}"
                            for m in methods)
        lines.append(f"| {name} | {sizes} | {','.join(map(str, per_seed))} | "
                     + " | ".join(cells) + f" | {minutes} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="digits,textures,sk_digits,faces,fashion")
    parser.add_argument("--work_dir", default="benchmark_finetune")
    parser.add_argument("--per_class", type=int, default=190,
                        help="images per class at most (digits: 190 gives ~1,500 training)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--module", default="efficientnet_lite0")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--augmentation_copies", type=int, default=2,
                        help="distorted variants per training image in the augmented rows")
    parser.add_argument("--bottleneck_root", help="where <set>_bottlenecks caches are "
                        "(default: --work_dir); the caches are keyed by image content")
    parser.add_argument("--fine_tune_top_blocks", type=int,
                        help="blocks the fine-tuned rows train (default: retrain's)")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    overrides = ({} if args.fine_tune_top_blocks is None
                 else {"fine_tune_top_blocks": args.fine_tune_top_blocks})
    from absl import logging  # pylint: disable=import-outside-toplevel
    logging.set_verbosity(logging.INFO)
    methods = args.methods.split(",")
    if methods[0] != "frozen":
        parser.error("--methods must start with frozen (the gains are against it)")
    os.makedirs(args.work_dir, exist_ok=True)
    results = {}
    for name in args.sets.split(","):
        full = os.path.join(args.work_dir, f"{name}_full")
        reference_sets.ensure(name, full)
        image_dir = subset(full, os.path.join(args.work_dir, f"{name}_{args.per_class}"),
                           args.per_class)
        counts = sum(len(files) for _, _, files in os.walk(image_dir))
        per_seed = {seed: run_set(name, image_dir, args.work_dir, seed, args.module, methods,
                                   args.augmentation_copies,
                                   os.path.join(args.bottleneck_root or args.work_dir,
                                                f"{name}_bottlenecks"), overrides)
                    for seed in map(int, args.seeds.split(","))}
        test_count = next(iter(per_seed.values()))["frozen"].test_count
        results[name] = (f"{counts} images, test N={test_count}", per_seed)
    table = format_table(results, methods)
    print(table)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as file:
            file.write(table)


if __name__ == "__main__":
    main()
