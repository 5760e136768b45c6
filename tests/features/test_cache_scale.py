"""The bottleneck cache at scale: mapped shards, bounded compaction, and the row store."""

import glob
import os

import numpy as np
import pytest

from conftest import fast_config
from retrain import pipeline
from retrain.data import dataset
from retrain.features import bottleneck_cache
from retrain.features import bottlenecks
from retrain.features import modules
from retrain.features import row_store

MODULE = modules.FeatureModule("test", "", (8, 8), "test-module")
FEATURE_DIM = 5


def key(index):
    return index.to_bytes(20, "big")


def fill(cache, count, flush_every, start=0, feature_dim=FEATURE_DIM):
    """Caches vector [i, i+0.5, ...] under key(i) for i in start..start+count-1."""
    writer = cache.writer(feature_dim, flush_every=flush_every)
    for index in range(start, start + count):
        writer.add(key(index), index + np.arange(feature_dim, dtype=np.float32) / 2)
    writer.flush()


def expected_vector(index):
    return index + np.arange(FEATURE_DIM, dtype=np.float32) / 2


def test_locate_keys_finds_each_cached_key_and_marks_the_rest(tmp_path):
    cache = bottleneck_cache.BottleneckCache(str(tmp_path))
    fill(cache, 10, flush_every=4)
    fill(cache, 3, flush_every=4, start=2)  # The same keys again, as two runs sharing a cache.
    shards = cache.open_shards(FEATURE_DIM)
    positions = bottleneck_cache.locate_keys(shards, [key(7), key(99), key(2), key(0)])
    assert positions[1] == -1
    all_vectors = np.concatenate([records["vector"] for records in shards])
    for position, index in zip(positions[[0, 2, 3]], [7, 2, 0]):
        np.testing.assert_array_equal(all_vectors[position], expected_vector(index))
    assert len(bottleneck_cache.locate_keys([], [key(1)])) == 1


def test_row_store_gives_exactly_the_rows_of_the_in_memory_array(tmp_path):
    cache = bottleneck_cache.BottleneckCache(str(tmp_path))
    fill(cache, 300, flush_every=64)
    shards = cache.open_shards(FEATURE_DIM)
    wanted = [key(index) for index in range(299, -1, -3)]
    extra = np.full((2, FEATURE_DIM), -1, np.float32)
    positions = np.append(bottleneck_cache.locate_keys(shards, wanted), [300, 301])
    store = row_store.RowStore.from_shards(shards, positions, FEATURE_DIM, extra)
    expected = np.stack([expected_vector(index) for index in range(299, -1, -3)] + list(extra))
    assert store.shape == expected.shape and len(store) == len(expected)
    np.testing.assert_array_equal(store.to_array(), expected)
    np.testing.assert_array_equal(np.asarray(store), expected)
    rng = np.random.default_rng(0)
    for _ in range(5):
        indices = rng.integers(0, len(expected), 37).astype(np.int64)
        np.testing.assert_array_equal(store[indices], expected[indices])
    np.testing.assert_array_equal(store[10:20], expected[10:20])
    subset = store.subset(np.array([5, 1, 90]))
    np.testing.assert_array_equal(subset[np.arange(3)], expected[[5, 1, 90]])
    assert store[np.zeros(0, np.int64)].shape == (0, FEATURE_DIM)


def test_row_store_reads_in_chunks_and_releases_pages(tmp_path, monkeypatch):
    monkeypatch.setattr(row_store, "_CHUNK_BYTES", 7 * FEATURE_DIM * 4)
    monkeypatch.setattr(row_store, "_RELEASE_BYTES", 1)
    released = []
    monkeypatch.setattr(bottleneck_cache, "release_pages", released.append)
    cache = bottleneck_cache.BottleneckCache(str(tmp_path))
    fill(cache, 100, flush_every=30)
    shards = cache.open_shards(FEATURE_DIM)
    store = row_store.RowStore.from_shards(
        shards, bottleneck_cache.locate_keys(shards, [key(index) for index in range(100)]),
        FEATURE_DIM)
    np.testing.assert_array_equal(store.to_array(), np.stack(
        [expected_vector(index) for index in range(100)]))
    assert len(released) >= 15 * len(shards)  # After each of the 15 chunks, every shard.


def test_compaction_merges_small_shards_in_bounded_groups_and_loses_nothing(tmp_path, monkeypatch):
    record_bytes = bottleneck_cache.record_dtype(FEATURE_DIM).itemsize
    # Shards of 10 records; merged shards of at most 100 records; 200+ records count as large.
    monkeypatch.setattr(bottleneck_cache, "_TARGET_SHARD_BYTES", 100 * record_bytes)
    monkeypatch.setattr(bottleneck_cache, "_SMALL_SHARD_BYTES", 200 * record_bytes)
    cache = bottleneck_cache.BottleneckCache(str(tmp_path))
    fill(cache, 300, flush_every=300, start=1000)  # One large shard: never rewritten.
    large = glob.glob(str(tmp_path / "shard-*.npy"))
    fill(cache, 400, flush_every=10)
    fill(cache, 10, flush_every=10, start=5)  # Duplicates of keys 5..14.
    assert len(glob.glob(str(tmp_path / "shard-*.npy"))) == 42
    shards = cache.open_shards(FEATURE_DIM)
    paths = glob.glob(str(tmp_path / "shard-*.npy"))
    assert set(large) <= set(paths)
    assert len(paths) == 1 + 5  # 410 small records in groups of at most 100 (before duplicates).
    assert not glob.glob(str(tmp_path / ".tmp-*"))
    cached = cache.load(FEATURE_DIM)
    # Duplicates are dropped within a merged group; across groups they are harmless.
    assert len(set(cached.keys)) == 700 and len(cached.keys) <= 710
    lookup = cached.lookup()
    for index in list(range(400)) + list(range(1000, 1300)):
        np.testing.assert_array_equal(cached.vectors[lookup[key(index)]], expected_vector(index))
    assert sum(len(records) for records in shards) == len(cached.keys)


def test_a_failed_compaction_keeps_every_shard_and_leaves_no_temporary(tmp_path, monkeypatch):
    cache = bottleneck_cache.BottleneckCache(str(tmp_path))
    fill(cache, 40, flush_every=1)
    real_fsync = os.fsync

    def full_disk(descriptor):
        del descriptor
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    shards = cache.open_shards(FEATURE_DIM)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert sum(len(records) for records in shards) == 40
    assert len(glob.glob(str(tmp_path / "shard-*.npy"))) == 40
    assert not glob.glob(str(tmp_path / ".tmp-*"))


def test_a_truncated_shard_is_ignored_with_a_warning(tmp_path):
    cache = bottleneck_cache.BottleneckCache(str(tmp_path))
    fill(cache, 8, flush_every=4)
    path = sorted(glob.glob(str(tmp_path / "shard-*.npy")))[0]
    with open(path, "r+b") as shard_file:
        shard_file.truncate(os.path.getsize(path) - 3)
    shards = cache.open_shards(FEATURE_DIM)
    assert sum(len(records) for records in shards) == 4


def test_get_bottlenecks_over_the_memory_budget_gives_the_same_rows(tmp_path, colour_images):
    collection = dataset.find_images(colour_images)
    cache = bottleneck_cache.BottleneckCache(bottleneck_cache.module_cache_dir(str(tmp_path), MODULE))
    cache.prepare({"feature_dim": FEATURE_DIM})
    writer = cache.writer(FEATURE_DIM, flush_every=5)
    rng = np.random.default_rng(0)
    for image in collection.images:
        writer.add(image.content_key, rng.standard_normal(FEATURE_DIM).astype(np.float32))
    writer.flush()
    in_memory = bottlenecks.get_bottlenecks(collection.images, MODULE, str(tmp_path), 8, 10**8)
    streamed = bottlenecks.get_bottlenecks(collection.images, MODULE, str(tmp_path), 8, 10**8,
                                           memory_budget=0)
    assert isinstance(in_memory.features, np.ndarray)
    assert isinstance(streamed.features, row_store.RowStore)
    assert in_memory.image_files == streamed.image_files == collection.images
    np.testing.assert_array_equal(streamed.features.to_array(), in_memory.features)


def test_split_arrays_are_views_of_one_array(tmp_path, tiny_module, colour_images):
    config = fast_config(colour_images, tiny_module, tmp_path / "out").resolved()
    collection = dataset.find_images(colour_images)
    module = modules.resolve_module(str(tiny_module))
    splits = pipeline.split.split_images(collection.images, collection.labels,
                                         config.validation_percentage, config.testing_percentage)
    vectors = bottlenecks.get_bottlenecks(pipeline.in_split_order(splits), module,
                                          config.bottleneck_dir, 8, 10**8)
    arrays = pipeline.split_arrays(vectors, splits)
    for name, (features, labels, image_files) in arrays.items():
        assert np.shares_memory(features, vectors.features), name
        assert len(features) == len(labels) == len(image_files)
    # The same split in another order still gives the right rows (copied).
    shuffled = bottlenecks.Bottlenecks(vectors.image_files[::-1], vectors.features[::-1], [], 0)
    for name, (features, _, _) in pipeline.split_arrays(shuffled, splits).items():
        np.testing.assert_array_equal(features, arrays[name][0])


@pytest.mark.parametrize("budget_mb", [0])
def test_a_run_over_the_memory_budget_trains_like_one_in_memory(tmp_path, tiny_module,
                                                                 colour_images, budget_mb):
    shared_cache = str(tmp_path / "cache")
    in_memory = pipeline.run(fast_config(colour_images, tiny_module, tmp_path / "a",
                                         bottleneck_dir=shared_cache))
    streamed = pipeline.run(fast_config(colour_images, tiny_module, tmp_path / "b",
                                        bottleneck_dir=shared_cache, bottleneck_memory_mb=budget_mb))
    assert streamed.bottlenecks_computed == 0
    assert streamed.test.top1_accuracy == in_memory.test.top1_accuracy
    np.testing.assert_allclose(streamed.history.cross_entropy, in_memory.history.cross_entropy,
                               rtol=1e-4)
    np.testing.assert_allclose(streamed.test.probabilities, in_memory.test.probabilities,
                               rtol=1e-4, atol=1e-6)


def test_available_memory_is_a_positive_number_of_bytes():
    available = row_store.available_memory_bytes()
    assert available is None or available > 0
