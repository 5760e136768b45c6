#!/usr/bin/env python3
"""Times `retrain bottlenecks` (Apache Beam) against retrain's own bottleneck stage.

  python scripts/benchmark_beam.py [--module efficientnet_lite0] [--images 200]

Needs the `beam` extra (e.g. .venv-beam/bin/python, see scripts/test.sh). Each variant runs
in a fresh process on the same JPEG files into an empty cache, timed from after the imports
to the last shard written, module loading included:
  retrain       dataset.find_images + bottlenecks.get_bottlenecks (tf.data, one process)
  beam_1        beam_bottlenecks.compute_cache on Beam's local FnApiRunner, one worker
  beam_2procs   the same with --direct_num_workers=2 --direct_running_mode=multi_processing
Then it compares the caches. The machines are shared and noisy: compare within one run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchmark import write_photos  # pylint: disable=wrong-import-position

_LOCAL = ["--runner=FnApiRunner"]
VARIANTS = {
    "retrain": None,
    "beam_1": _LOCAL,
    "beam_2procs": _LOCAL + ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", default="efficientnet_lite0", help="module to measure")
    parser.add_argument("--images", type=int, default=200, help="JPEG files to compute")
    parser.add_argument("--photo_size", default="320x240", help="size of those JPEGs (WxH)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variants")
    parser.add_argument("--json_out", default=None, help="also write the results here")
    parser.add_argument("--run_variant", nargs=3, metavar=("VARIANT", "IMAGE_DIR", "CACHE_DIR"),
                        help=argparse.SUPPRESS)  # One variant in this (fresh) process.
    return parser.parse_args()


def run_variant(variant, module_handle, image_dir, bottleneck_dir):
    """Computes the cache one way; prints the seconds it took as JSON."""
    # pylint: disable=import-outside-toplevel
    from retrain.config import RetrainConfig
    from retrain.data import dataset
    from retrain.features import beam_bottlenecks
    from retrain.features import bottlenecks
    from retrain.features import modules
    start = time.perf_counter()
    if VARIANTS[variant] is None:
        collection = dataset.find_images(image_dir)
        module = modules.resolve_module(module_handle)
        computed = bottlenecks.get_bottlenecks(collection.images, module, bottleneck_dir, None,
                                               RetrainConfig().max_image_pixels).computed
    else:
        config = RetrainConfig(image_dir=image_dir, bottleneck_dir=bottleneck_dir,
                               tfhub_module=module_handle).resolved()
        computed = beam_bottlenecks.compute_cache(config, VARIANTS[variant]).computed
    print(json.dumps({"seconds": time.perf_counter() - start, "computed": computed}))


def load_cache(bottleneck_dir):
    """{content key: float32 [D] vector} of the one module cache under bottleneck_dir."""
    from retrain.features.bottleneck_cache import BottleneckCache  # pylint: disable=import-outside-toplevel
    (name,) = os.listdir(bottleneck_dir)
    cache = BottleneckCache(os.path.join(bottleneck_dir, name))
    cached = cache.load(cache.read_description()["feature_dim"])
    return dict(zip(cached.keys, cached.vectors))


def main():
    args = parse_args()
    if args.run_variant:
        run_variant(args.run_variant[0], args.module, *args.run_variant[1:])
        return
    # pylint: disable=import-outside-toplevel
    from retrain.features import modules
    modules.resolve_module(args.module)  # Builds a built-in backbone once, outside the timings.
    results = {"module": args.module, "images": args.images}
    with tempfile.TemporaryDirectory() as work_dir:
        photos = os.path.join(work_dir, "photos")
        write_photos(photos, args.images, tuple(int(value) for value in args.photo_size.split("x")))
        caches = {}
        for variant in args.variants.split(","):
            caches[variant] = os.path.join(work_dir, variant)
            output = subprocess.run(
                [sys.executable, __file__, "--module", args.module, "--run_variant", variant,
                 photos, caches[variant]], check=True, capture_output=True, text=True).stdout
            measured = json.loads(output.strip().splitlines()[-1])
            results[f"{variant}_seconds"] = round(measured["seconds"], 1)
            results[f"{variant}_images_per_second"] = round(measured["computed"] / measured["seconds"], 1)
        vectors = {variant: load_cache(folder) for variant, folder in caches.items()}
        reference = vectors[next(iter(vectors))]
        for variant, cached in vectors.items():
            assert sorted(cached) == sorted(reference), f"{variant} cached other images"
            results[f"{variant}_max_abs_difference"] = float(max(
                np.abs(cached[key] - reference[key]).max() for key in reference))
    print("| measure | value |\n| --- | --- |")
    for key, value in results.items():
        print(f"| {key} | {value} |")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as output:
            json.dump(results, output, indent=2)


if __name__ == "__main__":
    main()
