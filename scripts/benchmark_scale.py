"""The scale parts of scripts/benchmark.py: cache reload, first training step, peak memory,
growth from 1k to 100k images, and a cache larger than memory.

Each part builds what it needs under a work folder: tiny PNG files (their bottlenecks are
random vectors written to the cache in its real shard format, 256 records a shard, as a run
that computed them would have left it), then measures retrain's own code on them.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from retrain.data import dataset  # pylint: disable=wrong-import-position
from retrain.features import bottleneck_cache  # pylint: disable=wrong-import-position
from retrain.features import modules  # pylint: disable=wrong-import-position

# A stand-in module: only its identity and size matter to the cache.
SYNTHETIC_MODULE = modules.FeatureModule("benchmark", "", (224, 224), "benchmark-module")


def write_tiny_pngs(folder, count, classes=5, seed=1):
    """Writes `count` distinct 8x8 random PNG files (about 250 bytes each) in `classes` folders."""
    rng = np.random.default_rng(seed)
    for label in range(classes):
        os.makedirs(os.path.join(folder, f"class_{label}"), exist_ok=True)
    for index in range(count):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"class_{index % classes}",
                                                  f"image_{index:07d}.png"))
    return folder


def fill_cache(cache_root, module, image_files, feature_dim, seed=2):
    """Caches a random float32 vector for each image, in shards of 256 as a real run writes them.

    Returns:
      The module's cache folder.
    """
    rng = np.random.default_rng(seed)
    cache = bottleneck_cache.BottleneckCache(bottleneck_cache.module_cache_dir(cache_root, module))
    cache.prepare({"handle": module.handle, "identity": module.identity,
                   "image_size": list(module.image_size), "feature_dim": feature_dim})
    writer = cache.writer(feature_dim)
    for image in image_files:
        writer.add(image.content_key, rng.standard_normal(feature_dim, dtype=np.float32))
    writer.flush()
    return cache.directory


def cache_size_ratio(cache_dir, count, feature_dim):
    """Bytes of the cache's shards over the raw float32 bytes of `count` vectors."""
    total = sum(os.path.getsize(os.path.join(cache_dir, name))
                for name in os.listdir(cache_dir) if name.startswith("shard-"))
    return total / (count * feature_dim * 4)


def prepare_cached_folder(work_dir, count, module, feature_dim):
    """A folder of `count` tiny PNGs whose bottlenecks are all cached; (folder, cache root)."""
    folder = os.path.join(work_dir, f"images_{count}")
    cache_root = os.path.join(work_dir, f"bottlenecks_{count}")
    if not os.path.isdir(folder):
        write_tiny_pngs(folder, count)
        fill_cache(cache_root, module, dataset.find_images(folder).images, feature_dim)
    return folder, cache_root


def run_probe(mode, **arguments):
    """Runs scripts/scale_probe.py in a fresh process; returns its JSON result."""
    command = [sys.executable, os.path.join(REPO, "scripts", "scale_probe.py"), mode,
               json.dumps(arguments)]
    environment = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    finished = subprocess.run(command, capture_output=True, text=True, env=environment,
                              check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"{mode} probe failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def measure_real_run(image_dir, bottleneck_dir, module_handle, output_dir, steps):
    """Seconds from the end of `import tensorflow` to each of retrain's log lines in
    _RUN_MARKS, in a real run (TensorBoard summaries and checkpoints included).

    The run is `python -m retrain --how_many_training_steps=steps` in a fresh process on a
    fully cached folder; it is stopped once the last training step is logged.
    """
    child = ("import sys, time\nimport tensorflow\n"
             "print(f'BENCHMARK tensorflow imported {time.time():.6f}', flush=True)\n"
             "from retrain.cli import retrain_command\nsys.argv = sys.argv[1:]\nretrain_command.run_main()\n")
    command = [sys.executable, "-c", child, "retrain", f"--image_dir={image_dir}",
               f"--bottleneck_dir={bottleneck_dir}", f"--tfhub_module={module_handle}",
               f"--output_dir={output_dir}", f"--how_many_training_steps={steps}", "--verbose"]
    environment = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
                       PYTHONUNBUFFERED="1")
    patterns = dict(_RUN_MARKS, last_step=rf"Step {steps - 1}: Train accuracy")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=environment, cwd=REPO)
    imported, marks, lines = None, {}, []
    try:
        for line in process.stdout:
            now = time.time()
            lines.append(line)
            if line.startswith("BENCHMARK tensorflow imported"):
                imported = float(line.split()[-1])
            elif imported is not None:
                for name, pattern in patterns.items():
                    if name not in marks and re.search(pattern, line):
                        marks[name] = round(now - imported, 3)
                if "last_step" in marks:
                    break
    finally:
        process.kill()
        process.wait()
    if "last_step" not in marks or "step_0" not in marks:
        raise RuntimeError("the run never reached its last step:\n" + "".join(lines[-30:]))
    return marks


# Log lines of a run, in order, and what has happened by the time each appears.
_RUN_MARKS = {
    "bottlenecks_found": r"Bottlenecks: \d+ of \d+ images cached",
    "split_done": r"Images: \d+ training",
    "step_0": r"Step 0: Train accuracy",
}


def measure_growth(work_dir, sizes, module_handle, steps):
    """Each figure at each number of images: {size: {figure: value}}, plus the fixed overhead.

    The images are tiny PNGs cached under the real module's cache folder (with random
    vectors), so that the first-step run is a real `python -m retrain --tfhub_module ...`.
    """
    from retrain.features import backbones  # pylint: disable=import-outside-toplevel
    module = modules.resolve_module(module_handle)
    feature_dim = backbones.ensure_backbone(module_handle).feature_dim
    module_fields = [module.handle, module.saved_model_dir, list(module.image_size),
                     module.identity]
    # The fixed overhead: the same run on 100 images (a 0.5 MB bottleneck array).
    folder, cache_root = prepare_cached_folder(work_dir, 100, module, feature_dim)
    overhead = run_probe("cached", image_dir=folder, bottleneck_dir=cache_root,
                         module=module_fields, steps=steps)["peak_rss_bytes"]
    table = {"fixed_overhead_bytes": overhead}
    for size in sizes:
        folder, cache_root = prepare_cached_folder(work_dir, size, module, feature_dim)
        cache = bottleneck_cache.BottleneckCache(bottleneck_cache.module_cache_dir(cache_root, module))
        shards_before = len([name for name in os.listdir(cache.directory) if name.startswith("shard-")])
        start = time.perf_counter()
        cache.open_shards(feature_dim)  # The first load after caching merges the small shards.
        compaction = time.perf_counter() - start
        probe = run_probe("cached", image_dir=folder, bottleneck_dir=cache_root,
                          module=module_fields, steps=steps)
        run = measure_real_run(folder, cache_root, module_handle,
                               os.path.join(work_dir, f"output_{size}"), steps)
        seconds = probe["seconds"]
        table[size] = {
            "reload_seconds": round(seconds["find_images"] + seconds["split"] + seconds["load"]
                                    + seconds["split_arrays"], 3),
            "reload_breakdown": seconds,
            "first_step_seconds_after_tf_import": run["step_0"],
            "real_run_marks": run,
            "compaction_seconds": round(compaction, 2), "shards_before_compaction": shards_before,
            "cache_size_vs_raw_float32": round(cache_size_ratio(cache.directory, size,
                                                                feature_dim), 4),
            "bottleneck_array_mb": round(probe["array_bytes"] / 2**20, 1),
            "peak_rss_mb": round(probe["peak_rss_bytes"] / 2**20, 1),
            "peak_mb_by_stage": probe["peak_mb_by_stage"],
            "peak_rss_minus_overhead_vs_array": round(
                (probe["peak_rss_bytes"] - overhead) / probe["array_bytes"], 2),
            f"training_seconds_{steps}_steps": seconds["training"],
            f"training_seconds_{steps}_steps_in_real_run": round(run["last_step"]
                                                                 - run["step_0"], 3),
        }
    return table


def write_synthetic_cache(cache_dir, rows, feature_dim, shard_rows=256, seed=3):
    """A cache of `rows` random vectors in shards of `shard_rows`, as runs would leave it.

    Keys are scale_probe.synthetic_key(0..rows-1). Written shard by shard: memory stays small.
    """
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    import scale_probe  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(seed)
    os.makedirs(cache_dir, exist_ok=True)
    dtype = bottleneck_cache.record_dtype(feature_dim)
    for start in range(0, rows, shard_rows):
        count = min(shard_rows, rows - start)
        records = np.empty(count, dtype)
        records["key"] = [np.void(scale_probe.synthetic_key(index))
                          for index in range(start, start + count)]
        records["vector"] = rng.standard_normal((count, feature_dim), dtype=np.float32)
        bottleneck_cache._write_shard(cache_dir, records)  # pylint: disable=protected-access


def measure_large_cache(work_dir, rows, feature_dim, steps, budget_mb):
    """Training from a synthetic cache of `rows` vectors that is not loaded into memory.

    Two runs: the first merges the 256-record shards, the second finds them merged.
    """
    cache_dir = os.path.join(work_dir, "large_cache")
    try:
        start = time.perf_counter()
        write_synthetic_cache(cache_dir, rows, feature_dim)
        written = time.perf_counter() - start
        disk_bytes = sum(os.path.getsize(os.path.join(cache_dir, name))
                         for name in os.listdir(cache_dir))
        runs = [run_probe("large", cache_dir=cache_dir, rows=rows, feature_dim=feature_dim,
                          steps=steps, budget_mb=budget_mb) for _ in range(2)]
        compacted_bytes = sum(os.path.getsize(os.path.join(cache_dir, name))
                              for name in os.listdir(cache_dir))
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return {"rows": rows, "write_seconds": round(written, 1),
            "cache_gb_on_disk": round(disk_bytes / 1e9, 3),
            "cache_size_vs_raw_float32": round(compacted_bytes / (rows * feature_dim * 4), 4),
            "memory_budget_mb": budget_mb, "first_run": runs[0], "second_run": runs[1],
            "peak_rss_mb": [round(run["peak_rss_bytes"] / 2**20, 1) for run in runs]}
