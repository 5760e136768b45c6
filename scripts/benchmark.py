#!/usr/bin/env python3
"""Measures retrain's speed against the hardware's ceiling, in one run on the same machine.

  python scripts/benchmark.py [--module efficientnet_lite0] [--images 512] [--cached_images 10000]

Reports (as a table, and as JSON with --json_out):
  ceiling      the module's forward throughput on in-memory tensors, at the best batch size
  bottlenecks  retrain's bottleneck stage (read, decode, resize, forward, cache) on JPEG files
  reload       finding, hashing and loading a fully cached set of --cached_images images
  training     --steps training steps of batch 100 on --feature_dim-d bottlenecks
  growth       at each of --scale_sizes images (tiny PNGs, cached random vectors): reload time,
               first training step after the TensorFlow import in a real `python -m retrain`,
               cache size, peak memory against the bottleneck array, --steps training steps
  large_cache  training from a synthetic cache of --large_cache_rows vectors (off by default:
               1000000 writes 5 GB) under --large_cache_budget_mb: time, peak memory, size
Ratios are only meaningful within one run: the machines are shared and noisy.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import benchmark_scale  # pylint: disable=wrong-import-position
from retrain import bottleneck_cache  # pylint: disable=wrong-import-position
from retrain import bottlenecks  # pylint: disable=wrong-import-position
from retrain import dataset  # pylint: disable=wrong-import-position
from retrain import modules  # pylint: disable=wrong-import-position
from retrain import train  # pylint: disable=wrong-import-position


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", default="efficientnet_lite0", help="module to measure")
    parser.add_argument("--image_size", type=int, default=None, help="for modules that need it")
    parser.add_argument("--images", type=int, default=512, help="JPEG files for the bottleneck stage")
    parser.add_argument("--photo_size", default="320x240", help="size of those JPEGs (WxH)")
    parser.add_argument("--batch_sizes", default="16,32,64", help="batch sizes to try for the ceiling")
    parser.add_argument("--cached_images", type=int, default=10000, help="images in the reload test")
    parser.add_argument("--steps", type=int, default=4000, help="training steps")
    parser.add_argument("--feature_dim", type=int, default=1280, help="bottleneck size for training")
    parser.add_argument("--scale_sizes", default="1000,10000,100000",
                        help="image counts for the growth table")
    parser.add_argument("--large_cache_rows", type=int, default=0,
                        help="vectors in the large-cache part (0: skip it)")
    parser.add_argument("--large_cache_budget_mb", type=int, default=1024,
                        help="memory budget the large cache must exceed (--bottleneck_memory_mb)")
    parser.add_argument("--work_dir", default=None, help="where to build (default: a temp dir)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip")
    parser.add_argument("--json_out", default=None, help="also write the results here")
    return parser.parse_args()


def write_photos(folder, count, size, classes=5, seed=0):
    """Writes smooth random-colour JPEGs (they compress and decode like photos, unlike noise)."""
    rng = np.random.default_rng(seed)
    width, height = size
    for index in range(count):
        label_dir = os.path.join(folder, f"class_{index % classes}")
        os.makedirs(label_dir, exist_ok=True)
        corners = rng.integers(0, 256, (2, 2, 3)).astype(np.uint8)
        photo = Image.fromarray(corners).resize((width, height), Image.BILINEAR)
        photo.save(os.path.join(label_dir, f"photo_{index:06d}.jpg"), quality=90)


def measure_ceiling(layer, image_size, batch_sizes, seconds=8.0):
    """Images/s of the bare forward pass on in-memory tensors, per batch size."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    forward = tf.function(lambda batch: layer(batch, training=False))
    results = {}
    for batch_size in batch_sizes:
        batch = tf.random.uniform([batch_size, *image_size, 3])
        forward(batch).numpy()  # Trace and warm up.
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            forward(batch).numpy()
            count += batch_size
        results[batch_size] = count / (time.perf_counter() - start)
    return results


def measure_bottleneck_stage(layer, module, folder, batch_size):
    """Images/s of retrain's bottleneck stage on JPEG files (cache writes included)."""
    collection = dataset.find_images(folder)
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = bottleneck_cache.BottleneckCache(cache_dir)
        dim = modules.feature_dim(module)
        start = time.perf_counter()
        vectors, failed = bottlenecks.compute_and_store(
            layer, module, collection.images, cache.writer(dim), batch_size, 10**8)
        elapsed = time.perf_counter() - start
    assert not failed and len(vectors) == len(collection.images)
    return len(collection.images) / elapsed


def measure_cached_reload(count, feature_dim, work_dir):
    """Seconds to find, hash and load `count` images that are all in the cache."""
    folder = os.path.join(work_dir, "cached")
    rng = np.random.default_rng(1)
    for index in range(count):
        label_dir = os.path.join(folder, f"class_{index % 5}")
        os.makedirs(label_dir, exist_ok=True)
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(label_dir, f"image_{index:06d}.png"))
    module = modules.FeatureModule("benchmark", "", (224, 224), "benchmark-module")
    cache_root = os.path.join(work_dir, "bottlenecks")
    cache = bottleneck_cache.BottleneckCache(bottleneck_cache.module_cache_dir(cache_root, module))
    cache.prepare({"feature_dim": feature_dim})
    writer = cache.writer(feature_dim, flush_every=4096)
    for image in dataset.find_images(folder).images:
        writer.add(image.content_key, rng.random(feature_dim, dtype=np.float32))
    writer.flush()
    start = time.perf_counter()
    collection = dataset.find_images(folder)
    loaded = bottlenecks.get_bottlenecks(collection.images, module, cache_root, 64, 10**8)
    elapsed = time.perf_counter() - start
    assert loaded.computed == 0 and len(loaded.image_files) == count
    cache_bytes = sum(os.path.getsize(os.path.join(cache.directory, name))
                      for name in os.listdir(cache.directory) if name.startswith("shard-"))
    return elapsed, cache_bytes / (count * feature_dim * 4)


def measure_training(steps, feature_dim, examples=10000, classes=5):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, classes, examples).astype(np.int32)
    features = (rng.random((examples, feature_dim)) + labels[:, None] * 0.01).astype(np.float32)
    settings = train.TrainingSettings(steps=steps, batch_size=100, learning_rate=0.01,
                                      eval_step_interval=10, validation_batch_size=100, seed=0)
    start = time.perf_counter()
    train.train_head(features, labels, features[:1000], labels[:1000], classes, settings)
    return time.perf_counter() - start


def measure_scale_parts(args, skip, work_dir, results):
    """The growth table and the large cache (scripts/benchmark_scale.py)."""
    if "growth" not in skip:
        sizes = [int(size) for size in args.scale_sizes.split(",") if size]
        results["growth"] = benchmark_scale.measure_growth(work_dir, sizes, args.module, args.steps)
    if "large_cache" not in skip and args.large_cache_rows > 0:
        results["large_cache"] = benchmark_scale.measure_large_cache(
            work_dir, args.large_cache_rows, args.feature_dim, args.steps, args.large_cache_budget_mb)


def print_growth_table(growth):
    if not growth:
        return
    sizes = [size for size in growth if size != "fixed_overhead_bytes"]
    figures = [name for name, value in growth[sizes[0]].items() if not isinstance(value, dict)]
    print(f"\n| figure | {' | '.join(f'{size:,} images' for size in sizes)} |")
    print(f"| --- |{' --- |' * len(sizes)}")
    for figure in figures:
        print(f"| {figure} | {' | '.join(str(growth[size][figure]) for size in sizes)} |")
    print(f"Fixed overhead (the same run on 100 images): "
          f"{growth['fixed_overhead_bytes'] / 2**20:.0f} MB peak RSS.")


def main():
    args = parse_args()
    skip = set(filter(None, args.skip.split(",")))
    results = {"module": args.module}
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work_dir:
        if not {"ceiling", "bottlenecks"} <= skip:
            size = (args.image_size, args.image_size) if args.image_size else None
            module = modules.resolve_module(args.module, size)
            layer = modules.load_feature_extractor(module)
            ceiling = measure_ceiling(layer, module.image_size,
                                      [int(value) for value in args.batch_sizes.split(",")])
            best_batch = max(ceiling, key=ceiling.get)
            results["ceiling_images_per_second"] = {str(k): round(v, 1) for k, v in ceiling.items()}
            results["best_batch_size"] = best_batch
            if "bottlenecks" not in skip:
                photos = os.path.join(work_dir, "photos")
                write_photos(photos, args.images, tuple(int(v) for v in args.photo_size.split("x")))
                stage = measure_bottleneck_stage(layer, module, photos, best_batch)
                results["bottleneck_stage_images_per_second"] = round(stage, 1)
                results["bottleneck_stage_vs_ceiling"] = round(stage / ceiling[best_batch], 3)
        if "reload" not in skip:
            seconds, size_ratio = measure_cached_reload(args.cached_images, args.feature_dim, work_dir)
            results[f"cached_reload_seconds_{args.cached_images}"] = round(seconds, 2)
            results["cache_size_vs_raw_float32"] = round(size_ratio, 4)
        if "training" not in skip:
            results[f"training_seconds_{args.steps}_steps"] = round(
                measure_training(args.steps, args.feature_dim), 2)
        measure_scale_parts(args, skip, work_dir, results)
    print("| measure | value |\n| --- | --- |")
    for key, value in results.items():
        if key != "growth":
            print(f"| {key} | {value} |")
    print_growth_table(results.get("growth"))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as output:
            json.dump(results, output, indent=2)


if __name__ == "__main__":
    main()
