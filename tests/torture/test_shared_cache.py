"""Torture: two runs at once sharing one --bottleneck_dir. Both succeed; the cache stays whole."""

import glob
import json
import os

import numpy as np
import pytest

from conftest import fast_config, write_solid_colour_images
from retrain import pipeline
from retrain.features import bottleneck_cache
import processes

PER_CLASS = 200
RUN_FLAGS = dict(how_many_training_steps=30, learning_rate=0.1, eval_step_interval=10,
                 validation_batch_size=-1, bottleneck_batch_size=8)


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    return write_solid_colour_images(tmp_path_factory.mktemp("many") / "photos",
                                     per_class=PER_CLASS, size=(16, 12))


def shard_records(bottleneck_dir):
    """Every record of every shard, failing on a corrupt one or a temporary file left behind."""
    records = []
    for module_dir in glob.glob(os.path.join(bottleneck_dir, "*")):
        assert not glob.glob(os.path.join(module_dir, ".tmp-shard-*")), "half-written shard"
        for path in glob.glob(os.path.join(module_dir, "shard-*.npy")):
            records.append(np.load(path, allow_pickle=False))
    return np.concatenate(records)


def test_two_runs_at_once_share_one_cache(tmp_path, many_images, tiny_module):
    cache = tmp_path / "cache"
    runs = [processes.start(processes.retrain_argv(many_images, tiny_module, tmp_path / f"out{index}",
                                                   bottleneck_dir=cache, **RUN_FLAGS),
                            tmp_path / f"run{index}.log")
            for index in range(2)]
    for index, run in enumerate(runs):
        assert run.wait(timeout=300) == 0, (tmp_path / f"run{index}.log").read_text()[-2000:]
    metrics = [json.loads((tmp_path / f"out{index}" / "metrics.json").read_text()) for index in range(2)]
    assert metrics[0]["history"] == metrics[1]["history"]
    records = shard_records(str(cache))
    keys = {bytes(key) for key in records["key"]}
    assert len(keys) == 3 * PER_CLASS
    # Where both runs cached the same image, they stored the same vector.
    by_key = {}
    for key, vector in zip(records["key"], records["vector"]):
        np.testing.assert_array_equal(by_key.setdefault(bytes(key), vector), vector)
    result = pipeline.run(fast_config(many_images, tiny_module, tmp_path / "out3",
                                      bottleneck_dir=str(cache), **RUN_FLAGS))
    assert result.bottlenecks_computed == 0


def test_compaction_keeps_shards_another_run_adds_meanwhile(tmp_path, monkeypatch):
    cache = bottleneck_cache.BottleneckCache(str(tmp_path))
    writer = cache.writer(feature_dim=2, flush_every=1)
    for index in range(bottleneck_cache._COMPACT_ABOVE_SHARDS + 1):  # pylint: disable=protected-access
        writer.add(index.to_bytes(20, "big"), np.array([index, index], np.float32))
    late_key = b"\xff" * 20
    read_shard = bottleneck_cache._read_shard  # pylint: disable=protected-access
    shards_read = []

    def read_then_let_another_run_write(path, feature_dim):
        shards_read.append(path)
        if len(shards_read) == bottleneck_cache._COMPACT_ABOVE_SHARDS + 1:  # pylint: disable=protected-access
            # Another run sharing the cache writes a shard after this one listed them.
            other = cache.writer(feature_dim=2, flush_every=1)
            other.add(late_key, np.array([7, 7], np.float32))
        return read_shard(path, feature_dim)

    monkeypatch.setattr(bottleneck_cache, "_read_shard", read_then_let_another_run_write)
    first = cache.load(feature_dim=2)
    assert late_key not in first.lookup()  # Listed before it was written: fine, not seen yet.
    monkeypatch.undo()
    second = cache.load(feature_dim=2)
    assert late_key in second.lookup(), "compaction deleted a shard it had not merged"
    assert len(second.keys) == bottleneck_cache._COMPACT_ABOVE_SHARDS + 2  # pylint: disable=protected-access
