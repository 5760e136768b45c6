"""Several forward passes at once, one per core (retrain.runtime.streams, devices.configure_threads)."""

import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from retrain.data import dataset
from retrain.features import bottlenecks
from retrain.features import modules
from retrain.predict import label_image
from retrain.runtime import batch_tuning
from retrain.runtime import devices
from retrain.runtime import streams
import conftest

_ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_results_come_in_order_although_later_calls_finish_first():
    delays = [0.05, 0.0, 0.03, 0.0, 0.01, 0.0]

    def slow_double(index):
        time.sleep(delays[index])
        return 2 * index

    pairs = list(streams.ordered_map(slow_double, iter(range(len(delays))), 3))
    assert pairs == [(index, 2 * index) for index in range(len(delays))]


def test_calls_run_at_once_in_worker_threads():
    # Each call waits for the other: one at a time, the barrier breaks after its timeout.
    barrier = threading.Barrier(2, timeout=30)
    callers = set()

    def meet(item):
        callers.add(threading.get_ident())
        barrier.wait()
        return item

    assert [result for _, result in streams.ordered_map(meet, iter(range(4)), 2)] == [0, 1, 2, 3]
    assert threading.get_ident() not in callers


def test_one_stream_calls_in_the_callers_thread():
    callers = []
    results = list(streams.ordered_map(lambda item: callers.append(threading.get_ident()) or item,
                                       iter(range(3)), 1))
    assert results == [(0, 0), (1, 1), (2, 2)]
    assert set(callers) == {threading.get_ident()}


def test_an_error_in_a_call_is_raised_at_its_turn_and_the_rest_is_not_run():
    started = []

    def fail_on_two(item):
        started.append(item)
        if item == 2:
            raise ValueError("bad batch 2")
        time.sleep(0.01)
        return item

    received = []
    with pytest.raises(ValueError, match="bad batch 2"):
        for item, _ in streams.ordered_map(fail_on_two, iter(range(100)), 2):
            received.append(item)
    assert received == [0, 1]
    # Items are handed out at most streams + 1 ahead of the results: the rest never ran.
    assert max(started) <= 2 + 2


def test_leaving_early_takes_no_more_items_than_the_calls_in_flight():
    taken = []

    def items():
        for item in range(1000):
            taken.append(item)
            yield item

    results = streams.ordered_map(lambda item: item, items(), 2)
    assert [next(results)[1] for _ in range(5)] == [0, 1, 2, 3, 4]
    results.close()
    assert len(taken) <= 5 + 3


def test_tuning_in_concurrent_streams_times_each_size_and_returns_every_row(caplog):
    """TunedForward shared by two streams: the schedule and the timings stay consistent."""
    seconds_per_image = {4: 0.002, 8: 0.001, 16: 0.002}
    chunk_sizes = []
    # Each thread's own simulated clock, advanced by its calls only: the timings are exact
    # whatever else the machine is doing (a sleep overran by 60% on a loaded machine).
    thread_clock = threading.local()

    def clock():
        return getattr(thread_clock, "now", 0.0)

    def forward(batch):
        chunk_sizes.append(len(batch))
        thread_clock.now = clock() + seconds_per_image[len(batch)] * len(batch)
        return np.asarray(batch, np.float32) * 2.0

    tuned = batch_tuning.TunedForward(forward, (4, 8, 16), "Test", clock=clock,
                                      passes_at_once=2)
    rows = np.arange(40 * 16, dtype=np.float32)[:, None]
    batches = [rows[start:start + 16] for start in range(0, len(rows), 16)]
    with caplog.at_level(logging.INFO, logger="absl"):
        results = list(streams.ordered_map(tuned, iter(batches), 2))
    for batch, result in results:
        np.testing.assert_array_equal(result, batch * 2.0)
    assert [batch[0, 0] for batch, _ in results] == [batch[0, 0] for batch in batches]
    assert tuned.chosen == 8
    # Rates for both passes together: 16 images per 32 ms a pass, two passes at once.
    assert "Test: 8 images per forward pass" in caplog.text
    assert "(images/s, 2 passes at once: 4: " in caplog.text
    rate_at_16 = float(caplog.text.split(" 16: ")[1].split(";")[0])
    assert rate_at_16 == pytest.approx(1000, rel=0.01)
    rounds = batch_tuning.WARMUP_ROUNDS + batch_tuning.TIMED_ROUNDS
    assert chunk_sizes.count(16) >= rounds and chunk_sizes.count(4) == 4 * rounds


def test_bottlenecks_in_two_streams_equal_those_in_one(tmp_path, tiny_module):
    conftest.write_solid_colour_images(str(tmp_path / "images"), per_class=15)  # 45 images
    images = dataset.find_images(str(tmp_path / "images")).images
    module = modules.resolve_module(tiny_module)
    layer = modules.load_feature_extractor(module)
    one, _ = bottlenecks.compute_and_store(layer, module, images, conftest.NullWriter(), 4, 10**8,
                                           forward_streams=1)
    two, _ = bottlenecks.compute_and_store(layer, module, images, conftest.NullWriter(), 4, 10**8,
                                           forward_streams=2)
    assert sorted(two) == sorted(one) and len(one) == len(images)
    for key, vector in one.items():
        np.testing.assert_allclose(two[key], vector, rtol=0, atol=1e-6)


def test_label_image_in_two_streams_predicts_every_file_in_order(tmp_path, tiny_module):
    folder = conftest.write_solid_colour_images(str(tmp_path / "images"), per_class=12)
    (tmp_path / "images" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    classifier = conftest.tiny_classifier(tiny_module, tmp_path / "model")
    paths = label_image.find_image_files(folder)
    one = list(label_image.classify_files(classifier, paths, 4, forward_streams=1))
    two = list(label_image.classify_files(classifier, paths, 4, forward_streams=2))
    conftest.assert_same_predictions(two, one, paths)


_CONFIGURED = """
import os, sys
if sys.argv[2] == "one_core":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from absl import logging
logging.set_verbosity(logging.INFO)
import tensorflow as tf
from retrain.runtime import batch_tuning
from retrain.runtime import devices
devices.configure_threads(forward_streams_allowed=sys.argv[1] == "allowed")
print(tf.config.threading.get_intra_op_parallelism_threads(),
      tf.config.threading.get_inter_op_parallelism_threads(), devices.forward_streams(),
      batch_tuning.batch_size_candidates(None, batch_tuning.MIN_IMAGES_TO_TUNE))
"""


def _configured(allowed, cores):
    completed = subprocess.run([sys.executable, "-c", _CONFIGURED, allowed, cores],
                               capture_output=True, text=True, timeout=300, cwd=_ROOT, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout.split("\n")[-2], completed.stderr


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or devices.usable_cores() < 2,
                    reason="needs 2 usable cores")
def test_a_forward_only_job_runs_one_pass_per_core_on_one_thread_each():
    cores = devices.usable_cores()
    output, log = _configured("allowed", "all")
    assert output == f"1 {cores} {cores} (4, 16)"
    assert f"TensorFlow runs {cores} forward passes at once, one per core" in log


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or devices.usable_cores() < 2,
                    reason="needs 2 usable cores")
def test_fine_tuning_keeps_one_pass_over_every_core():
    output, log = _configured("not_allowed", "all")
    assert output == "0 0 1 (8, 16)"
    assert "forward passes at once" not in log


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_one_core_runs_one_pass():
    output, log = _configured("allowed", "one_core")
    assert output == "0 0 1 (4, 16)"
    assert "forward passes at once" not in log


_MANY_CORES = """
from retrain.runtime import devices
devices.usable_cores = lambda: devices.MAX_FORWARD_STREAMS + 4
import tensorflow as tf
devices.configure_threads()
print(tf.config.threading.get_intra_op_parallelism_threads(), devices.forward_streams())
"""


def test_many_cores_keep_one_pass_over_every_core():
    """Above MAX_FORWARD_STREAMS, where the passes' Python dispatch could queue for the GIL."""
    completed = subprocess.run([sys.executable, "-c", _MANY_CORES], capture_output=True,
                               text=True, timeout=300, cwd=_ROOT, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split("\n")[-2] == "0 1"
    assert "forward passes at once" not in completed.stderr
