"""Choosing the forward pass's batch size by timing real batches (retrain.runtime.batch_tuning)."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from retrain.data import dataset
from retrain.data import distortion_settings
from retrain.features import bottlenecks
from retrain.features import distorted_variants
from retrain.features import modules
from retrain.predict import label_image
from retrain.runtime import batch_tuning
from retrain.runtime import devices
import conftest


class FakeNetwork:
    """A forward pass whose cost per image depends on the batch size, on a fake clock."""

    def __init__(self, seconds_per_image):
        self.seconds_per_image = seconds_per_image  # {batch size: seconds per image}
        self.now = 0.0
        self.chunk_sizes = []

    def clock(self):
        return self.now

    def forward(self, batch):
        self.chunk_sizes.append(len(batch))
        self.now += self.seconds_per_image.get(len(batch), 1.0) * len(batch)
        return np.asarray(batch, np.float32) * 2.0


def _batches(count, size=16, last=None):
    rows = np.arange((count - 1) * size + (last or size), dtype=np.float32)
    return [rows[start:start + size, None] for start in range(0, len(rows), size)]


def _tuned(network, candidates=(4, 8, 16)):
    return batch_tuning.TunedForward(network.forward, candidates, "Test", clock=network.clock)


def _tuning_batches(candidates=(4, 8, 16)):
    """How many batches tuning takes: a round of each candidate size, warm-up and timed."""
    return (batch_tuning.WARMUP_ROUNDS + batch_tuning.TIMED_ROUNDS) * len(candidates)


def test_tuning_tries_each_size_then_keeps_the_fastest_and_returns_every_row(caplog):
    network = FakeNetwork({4: 0.010, 8: 0.007, 16: 0.009})
    tuned = _tuned(network)
    batches = _batches(20, last=5)
    chunks_of_each_batch = []
    with caplog.at_level(logging.INFO, logger="absl"):
        for batch in batches:
            before = len(network.chunk_sizes)
            np.testing.assert_array_equal(tuned(batch), batch * 2.0)
            chunks_of_each_batch.append(network.chunk_sizes[before:])
    rounds = batch_tuning.WARMUP_ROUNDS + batch_tuning.TIMED_ROUNDS
    tuning, after = chunks_of_each_batch[:3 * rounds], chunks_of_each_batch[3 * rounds:]
    # While tuning, every round ran one whole batch at each size.
    for round_ in range(rounds):
        assert sorted(map(tuple, tuning[3 * round_:3 * round_ + 3])) == [
            (4, 4, 4, 4), (8, 8), (16,)]
    # Afterwards chunks of 8; the last batch (5 rows) in one.
    assert tuned.chosen == 8
    assert after == [[8, 8]] * (len(after) - 1) + [[5]]
    assert "Test: 8 images per forward pass" in caplog.text


@pytest.mark.parametrize("fastest", [4, 16])
def test_tuning_follows_the_machine(fastest):
    costs = {4: 0.010, 8: 0.010, 16: 0.010}
    costs[fastest] = 0.008
    network = FakeNetwork(costs)
    tuned = _tuned(network)
    for batch in _batches(_tuning_batches() + 1):
        tuned(batch)
    assert tuned.chosen == fastest


@pytest.mark.parametrize("smaller_faster_by, chosen", [(0.03, 16), (0.08, 8)])
def test_a_smaller_size_must_be_clearly_faster(smaller_faster_by, chosen):
    """One batch's time varies by more than the sizes differ: near-ties go to the largest."""
    assert 0.03 < batch_tuning.SMALLER_SIZE_MARGIN < 0.08
    network = FakeNetwork({8: 0.010 / (1 + smaller_faster_by), 16: 0.010})
    tuned = _tuned(network, candidates=(8, 16))
    for batch in _batches(_tuning_batches((8, 16))):
        tuned(batch)
    assert tuned.chosen == chosen


def test_one_slow_sample_does_not_decide():
    """The median of the timed rounds: another process stealing the CPU once is ignored."""
    network = FakeNetwork({4: 0.010, 8: 0.009, 16: 0.011})
    tuned = _tuned(network)
    real_forward = network.forward

    def forward_with_a_hiccup(batch):
        if len(network.chunk_sizes) == 20:  # Inside a timed batch of 8s.
            network.now += 5.0
        return real_forward(batch)

    tuned._forward = forward_with_a_hiccup  # pylint: disable=protected-access
    for batch in _batches(_tuning_batches()):
        tuned(batch)
    assert tuned.chosen == 8


def test_partial_batches_are_not_timed():
    network = FakeNetwork({4: 0.001, 8: 0.010, 16: 0.009})
    tuned = _tuned(network)
    # Batches of 3 rows make 4 look cheap per call, but they are never timed: nothing is,
    # so the largest size, the one the reader's batches have, is kept.
    for batch in _batches(_tuning_batches(), size=3):
        tuned(batch)
    assert tuned.chosen == 16


def test_one_candidate_is_the_plain_forward():
    network = FakeNetwork({})
    assert batch_tuning.tuned(network.forward, (7,), "Test") == network.forward


def test_candidates_only_for_a_large_job_on_one_cpu_without_a_requested_size(monkeypatch):
    many = batch_tuning.MIN_IMAGES_TO_TUNE
    monkeypatch.setattr(devices, "network_threads", lambda: 2)
    assert batch_tuning.batch_size_candidates(None, many) == batch_tuning.CPU_BATCH_SIZE_CANDIDATES
    assert batch_tuning.batch_size_candidates(5, many) == (5,)
    assert batch_tuning.batch_size_candidates(None, many - 1) == (devices.default_batch_size(),)
    monkeypatch.setattr(devices, "parallel_device_count", lambda: 2)
    assert batch_tuning.batch_size_candidates(None, many) == (devices.default_batch_size(),)


def test_a_network_on_one_thread_tries_four_images_per_pass(monkeypatch):
    many = batch_tuning.MIN_IMAGES_TO_TUNE
    monkeypatch.setattr(devices, "network_threads", lambda: 1)
    assert batch_tuning.batch_size_candidates(None, many) == (4, 16)
    assert devices.default_batch_size() == 4
    monkeypatch.setattr(devices, "network_threads", lambda: 2)
    assert batch_tuning.batch_size_candidates(None, many) == (8, 16)
    assert devices.default_batch_size() == 8


def test_network_threads_are_the_intra_op_setting_else_the_usable_cores(monkeypatch):
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert devices.network_threads() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5}, raising=False)
    assert devices.network_threads() == 1
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 2)
    assert devices.network_threads() == 2


_PINNED_TO_ONE_CORE = """
import os
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from retrain.data import preprocess
from retrain.runtime import batch_tuning
print(batch_tuning.batch_size_candidates(None, batch_tuning.MIN_IMAGES_TO_TUNE),
      preprocess.reader_threads())
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_a_process_pinned_to_one_core_tries_four_images_per_pass():
    """What `taskset -c 0` or `docker run --cpuset-cpus 0` gives, without monkeypatching."""
    completed = subprocess.run([sys.executable, "-c", _PINNED_TO_ONE_CORE], capture_output=True,
                               text=True, timeout=300, check=True,
                               cwd=os.path.join(os.path.dirname(__file__), "..", ".."))
    assert completed.stdout.split("\n")[-2] == "(4, 16) 1"


def _small_tuning_job(monkeypatch):
    """Makes tuning start at 200 images: the tiny module is fast, but 200 still are a few."""
    monkeypatch.setattr(batch_tuning, "MIN_IMAGES_TO_TUNE", 200)


def test_tuned_bottlenecks_equal_those_of_a_fixed_batch_size(tmp_path, tiny_module, monkeypatch,
                                                             caplog):
    _small_tuning_job(monkeypatch)
    conftest.write_solid_colour_images(str(tmp_path / "images"), per_class=80)  # 240 images
    images = dataset.find_images(str(tmp_path / "images")).images
    module = modules.resolve_module(tiny_module)
    layer = modules.load_feature_extractor(module)

    with caplog.at_level(logging.INFO, logger="absl"):
        tuned, _ = bottlenecks.compute_and_store(layer, module, images, conftest.NullWriter(), None, 10**8)
    fixed, _ = bottlenecks.compute_and_store(layer, module, images, conftest.NullWriter(), 4, 10**8)
    assert "Bottlenecks: " in caplog.text and "images per forward pass, chosen by timing" in caplog.text
    assert sorted(tuned) == sorted(fixed) and len(tuned) == len(images)
    for key, vector in fixed.items():
        np.testing.assert_allclose(tuned[key], vector, rtol=0, atol=1e-6)


def test_tuned_distorted_variants_equal_those_of_a_fixed_batch_size(tmp_path, tiny_module,
                                                                   monkeypatch, caplog):
    """Distorted batches come from tf.data as tensors; the tuner splits those too."""
    _small_tuning_job(monkeypatch)
    conftest.write_solid_colour_images(str(tmp_path / "images"), per_class=80)
    distortions = distortion_settings.Distortions(flip_left_right=True, random_crop=10)
    variants = distorted_variants.variant_files(dataset.find_images(str(tmp_path / "images")).images,
                                          distortions, 1)
    module = modules.resolve_module(tiny_module)
    layer = modules.load_feature_extractor(module)
    with caplog.at_level(logging.INFO, logger="absl"):
        tuned, _ = bottlenecks.compute_and_store(layer, module, variants, conftest.NullWriter(), None,
                                                 10**8, distortions)
    fixed, _ = bottlenecks.compute_and_store(layer, module, variants, conftest.NullWriter(), 4, 10**8,
                                             distortions)
    assert "images per forward pass, chosen by timing" in caplog.text
    assert sorted(tuned) == sorted(fixed) and len(tuned) == len(variants)
    for key, vector in fixed.items():
        np.testing.assert_allclose(tuned[key], vector, rtol=0, atol=1e-6)


def test_tuned_label_image_predicts_every_file_in_order(tmp_path, tiny_module, monkeypatch, caplog):
    _small_tuning_job(monkeypatch)
    folder = conftest.write_solid_colour_images(str(tmp_path / "images"), per_class=70)
    (tmp_path / "images" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    classifier = conftest.tiny_classifier(tiny_module, tmp_path / "model")
    paths = label_image.find_image_files(folder)
    with caplog.at_level(logging.INFO, logger="absl"):
        tuned = list(label_image.classify_files(classifier, paths))
    fixed = list(label_image.classify_files(classifier, paths, batch_size=4))
    assert "label_image: " in caplog.text and "images per forward pass" in caplog.text
    conftest.assert_same_predictions(tuned, fixed, paths)
