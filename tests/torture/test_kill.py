"""Torture: kill -9 at chosen moments. Nothing is lost or half-written; the next run carries on."""

import glob
import json
import os
import random
import time

import numpy as np
import pytest

from conftest import fast_config, write_solid_colour_images
from retrain import pipeline
from retrain.features import bottleneck_cache
import processes

# Enough images for two full cache shards (256 records each) and a partial one.
PER_CLASS = 200
RUN_FLAGS = dict(how_many_training_steps=60, learning_rate=0.1, eval_step_interval=20,
                 validation_batch_size=-1, bottleneck_batch_size=8)


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    return write_solid_colour_images(tmp_path_factory.mktemp("many") / "photos",
                                     per_class=PER_CLASS, size=(16, 12))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, many_images, tiny_module):
    """An uninterrupted run: what every interrupted-and-resumed run must reproduce."""
    output_dir = tmp_path_factory.mktemp("reference") / "out"
    pipeline.run(fast_config(many_images, tiny_module, output_dir, **RUN_FLAGS))
    return output_dir


def cache_vectors(bottleneck_dir):
    """{content key: vector} over every shard in the cache, checking each shard as it goes."""
    vectors = {}
    for module_dir in glob.glob(os.path.join(bottleneck_dir, "*")):
        for path in glob.glob(os.path.join(module_dir, "shard-*.npy")):
            records = np.load(path, allow_pickle=False)  # Raises if a shard is corrupt.
            assert records.dtype == bottleneck_cache.record_dtype(6), path
            for key, vector in zip(records["key"], records["vector"]):
                vectors[bytes(key)] = vector
    return vectors


def assert_same_result(output_dir, reference_dir):
    metrics = json.loads((output_dir / "metrics.json").read_text())
    expected = json.loads((reference_dir / "metrics.json").read_text())
    for field in ("labels", "history", "test_top1_accuracy", "test_count"):
        assert metrics[field] == expected[field], field
    assert ((output_dir / "output_labels.txt").read_bytes()
            == (reference_dir / "output_labels.txt").read_bytes())
    return metrics


def test_kill_during_caching_then_resume(tmp_path, many_images, tiny_module, reference):
    bottleneck_dir = tmp_path / "cache"
    output_dir = tmp_path / "out"
    argv = processes.retrain_argv(many_images, tiny_module, output_dir,
                                  bottleneck_dir=bottleneck_dir, **RUN_FLAGS)
    shard = str(bottleneck_dir / "*" / "shard-*.npy")
    # First kill: the moment the first shard is in place. Second: at a random moment (seeded,
    # so a failure can be replayed) after the resumed run starts computing.
    killed = processes.kill_when(processes.start(argv, tmp_path / "run1.log"), processes.exists(shard))
    assert killed, "the run finished before it could be killed"
    delay = random.Random(7).uniform(0.0, 0.3)
    log = tmp_path / "run2.log"
    started = processes.start(argv, log)
    computing = lambda: "to compute" in log.read_text(errors="replace")
    killed = processes.kill_when(started, lambda: computing() and time.sleep(delay) is None)
    assert killed, "the run finished before it could be killed"
    cached = cache_vectors(str(bottleneck_dir))
    # (On a fast machine the second run may have cached everything before its kill.)
    assert 256 <= len(cached) <= 3 * PER_CLASS  # At least the first run's shard.
    reference_vectors = cache_vectors(str(reference / "bottlenecks"))
    for key, vector in cached.items():
        np.testing.assert_array_equal(vector, reference_vectors[key])
    assert not (output_dir / "saved_model").exists()

    result = pipeline.run(fast_config(many_images, tiny_module, output_dir,
                                      bottleneck_dir=str(bottleneck_dir), **RUN_FLAGS))
    assert result.bottlenecks_computed == 3 * PER_CLASS - len(cached)
    assert_same_result(output_dir, reference)
    assert len(cache_vectors(str(bottleneck_dir))) == 3 * PER_CLASS


def test_kill_during_training_leaves_no_model(tmp_path, many_images, tiny_module, reference):
    output_dir = tmp_path / "out"
    flags = dict(RUN_FLAGS, how_many_training_steps=1_000_000,
                 bottleneck_dir=reference / "bottlenecks")
    process = processes.start(processes.retrain_argv(many_images, tiny_module, output_dir, **flags),
                              tmp_path / "run.log")
    assert processes.kill_when(process, processes.exists(str(output_dir / "summaries" / "train" / "*")))
    # Like the summaries, the training log is written as training goes, and the audit is
    # finished before training starts (--exclude_flagged needs it); no model, labels or metrics
    # may appear before training ends.
    assert sorted(set(os.listdir(output_dir)) - {"training_log.txt"}) == [
        "audit.html", "audit.json", "summaries"]
    with open(output_dir / "audit.json", encoding="utf-8") as audit:
        assert "label_issues" in json.load(audit)  # Whole: written by rename.


def test_kill_during_export_keeps_the_old_model_whole(tmp_path, many_images, tiny_module,
                                                     reference):
    import shutil  # pylint: disable=import-outside-toplevel
    output_dir = tmp_path / "out"
    shutil.copytree(reference, output_dir)  # A finished earlier run at the same output path.
    flags = dict(RUN_FLAGS, bottleneck_dir=reference / "bottlenecks", learning_rate=0.5)
    process = processes.start(processes.retrain_argv(many_images, tiny_module, output_dir, **flags),
                              tmp_path / "run.log")
    # The export's temporary folder lies beside its version folder: saved_model/.tmp-*-1.
    assert processes.kill_when(process, processes.exists(str(output_dir / "saved_model" /
                                                             ".tmp-*")))
    # The path holds a whole model (the old one: the new one was not finished) and labels.
    assert_loads(output_dir / "saved_model")
    assert ((output_dir / "output_labels.txt").read_bytes()
            == (reference / "output_labels.txt").read_bytes())
    # The next run carries on and replaces it.
    pipeline.run(fast_config(many_images, tiny_module, output_dir,
                             bottleneck_dir=str(reference / "bottlenecks"), **RUN_FLAGS))
    assert_loads(output_dir / "saved_model")
    assert_same_result(output_dir, reference)


def assert_loads(saved_model_dir):
    from retrain.predict import label_image  # pylint: disable=import-outside-toplevel
    classifier = label_image.load_classifier(str(saved_model_dir))
    assert classifier.labels == ["blue", "green", "red"]
