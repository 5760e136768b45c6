#!/usr/bin/env python3
"""One measurement of scripts/benchmark_scale.py, in a fresh process so that its peak memory
(VmHWM) is its own: python scripts/scale_probe.py MODE JSON_ARGUMENTS; prints a JSON line.

  cached    a fully cached image folder: find, split, load, split arrays, train (retrain's path)
  large     a cache of synthetic keys: open, locate, train from the mapped row store
"""

import dataclasses
import json
import logging
import os
import sys
import time

from absl import logging as absl_logging
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tensorflow as tf  # pylint: disable=wrong-import-position,unused-import

from retrain import pipeline  # pylint: disable=wrong-import-position
from retrain.config import RetrainConfig  # pylint: disable=wrong-import-position
from retrain.data import dataset  # pylint: disable=wrong-import-position
from retrain.data import split  # pylint: disable=wrong-import-position
from retrain.features import bottleneck_cache  # pylint: disable=wrong-import-position
from retrain.features import bottlenecks  # pylint: disable=wrong-import-position
from retrain.features import modules  # pylint: disable=wrong-import-position
from retrain.features import row_store  # pylint: disable=wrong-import-position
from retrain.training import train  # pylint: disable=wrong-import-position


def memory_status(field="VmHWM"):
    """Bytes of one /proc/self/status field: VmHWM is the peak resident memory (anonymous plus
    mapped file pages), VmRSS the current one."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def peak_rss_bytes():
    return memory_status("VmHWM")


def settings(steps):
    """retrain's default training settings (RetrainConfig), with `steps` steps; the Step lines
    logged (FirstLogLine watches for them), and no training log file."""
    return dataclasses.replace(
        pipeline.training_settings(RetrainConfig(how_many_training_steps=steps, verbose=True)),
        log_file=None)


class Stopwatch:
    """Seconds per stage, and the peak memory (MB) reached by the end of each."""

    def __init__(self):
        self.seconds, self.peak_mb, self._last = {}, {}, time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self.peak_mb[name] = round(peak_rss_bytes() / 2**20, 1)
        self._last = now


class FirstLogLine(logging.Handler):
    """Seconds from its creation to the first log message that contains `text`."""

    def __init__(self, text):
        super().__init__()
        self._text, self._start, self.seconds = text, time.perf_counter(), None
        absl_logging.set_verbosity(absl_logging.INFO)
        absl_logging.get_absl_logger().addHandler(self)

    def emit(self, record):
        if self.seconds is None and self._text in record.getMessage():
            self.seconds = time.perf_counter() - self._start


def measure_cached(image_dir, bottleneck_dir, module, steps, budget_mb=None):
    """retrain's own stages on a fully cached folder, timed one by one."""
    clock = Stopwatch()
    clock.lap("start")
    module = modules.FeatureModule(*module)
    collection = dataset.find_images(image_dir)
    clock.lap("find_images")
    splits = split.split_images(collection.images, collection.labels, 10, 10)
    clock.lap("split")
    vectors = bottlenecks.get_bottlenecks(
        pipeline.in_split_order(splits), module, bottleneck_dir, 16, 10**8,
        None if budget_mb is None else budget_mb << 20)
    clock.lap("load")
    data = pipeline.split_arrays(vectors, splits)
    clock.lap("split_arrays")
    first_step = FirstLogLine("Step 0:")
    train.train_head(*data["training"][:2], *data["validation"][:2], len(collection.labels),
                     settings(steps))
    clock.lap("training")
    clock.seconds["first_step"] = round(first_step.seconds, 3)
    return {"images": len(vectors.image_files), "array_bytes": vectors.features.nbytes,
            "in_memory": isinstance(vectors.features, np.ndarray),
            "seconds": clock.seconds, "peak_mb_by_stage": clock.peak_mb,
            "peak_rss_bytes": peak_rss_bytes()}


def synthetic_key(index):
    return index.to_bytes(8, "big") * 2 + b"\0" * 4


def measure_large(cache_dir, rows, feature_dim, steps, budget_mb, classes=5):
    """Trains on a cache of `rows` synthetic vectors (keys synthetic_key(0..rows-1))."""
    clock = Stopwatch()
    clock.lap("start")
    cache = bottleneck_cache.BottleneckCache(cache_dir)
    shards = cache.open_shards(feature_dim)
    clock.lap("open_shards")
    positions = bottleneck_cache.locate_keys(shards, [synthetic_key(index) for index in range(rows)])
    store = row_store.RowStore.from_shards(shards, positions, feature_dim)
    clock.lap("locate_keys")
    labels = (np.arange(rows) % classes).astype(np.int32)
    if not bottlenecks.fits_in_memory(rows, feature_dim, budget_mb << 20):
        features = store
    else:
        features = store.to_array()
    training, validation = np.arange(rows // 10, rows), np.arange(rows // 10)
    train_features = features.subset(training) if features is store else features[training]
    validation_features = (features.subset(validation) if features is store
                           else features[validation])
    clock.lap("prepare")
    train.train_head(train_features, labels[training], validation_features, labels[validation],
                     classes, settings(steps))
    clock.lap("training")
    return {"rows": rows, "in_memory": features is not store, "shards": len(shards),
            "seconds": clock.seconds, "peak_mb_by_stage": clock.peak_mb,
            "peak_rss_bytes": peak_rss_bytes()}


def main():
    mode, arguments = sys.argv[1], json.loads(sys.argv[2])
    measure = {"cached": measure_cached, "large": measure_large}[mode]
    print(json.dumps(measure(**arguments)))


if __name__ == "__main__":
    main()
