"""Bottleneck extraction on several devices gives the single-device result.

TensorFlow can split the CPU into logical devices only before it first runs anything, so the
multi-device runs happen in a fresh Python process.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from retrain.data import dataset
from retrain.errors import UserError
from retrain.features import bottleneck_cache
from retrain.features import bottlenecks
from retrain.features import modules
from retrain.runtime import devices
import conftest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Computes the bottlenecks of a folder on one device and on two logical CPUs, in one process.
_TWO_DEVICES_SCRIPT = """
import json, sys
import numpy as np
from retrain.runtime import devices
devices.configure_logical_cpu_devices(2)
import tensorflow as tf
from retrain.data import dataset
from retrain.features import bottlenecks
from retrain.features import modules
module_dir, image_dir, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = modules.resolve_module(module_dir)
layer = modules.load_feature_extractor(module)
collection = dataset.find_images(image_dir)

class NullWriter:
    def add(self, key, vector): pass
    def flush(self): pass

result = {}
for name, strategy in (("one", tf.distribute.get_strategy()), ("two", devices.distribution_strategy())):
    vectors, failed = bottlenecks.compute_and_store(layer, module, collection.images, NullWriter(),
                                                    batch_size, 10**8, strategy=strategy)
    result[name] = {"replicas": strategy.num_replicas_in_sync,
                    "vectors": {key.hex(): vector.tolist() for key, vector in vectors.items()},
                    "failed": [failure.path for failure in failed]}
result["default_batch_size"] = devices.default_batch_size()
print(json.dumps(result))
"""


def _run_python(*args):
    completed = subprocess.run([sys.executable, *args], cwd=_ROOT, capture_output=True, text=True,
                               check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def _folder_with_a_broken_image(tmp_path, colour_images):
    """The colour images (36) plus one broken file: 37 files, so batches of 5 end with 2."""
    folder = tmp_path / "photos"
    for label in sorted(os.listdir(colour_images)):
        os.makedirs(folder / label)
        for name in sorted(os.listdir(os.path.join(colour_images, label))):
            with open(os.path.join(colour_images, label, name), "rb") as source:
                (folder / label / name).write_bytes(source.read())
    (folder / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return str(folder)


def test_two_logical_cpus_compute_the_single_device_vectors(tmp_path, tiny_module, colour_images):
    folder = _folder_with_a_broken_image(tmp_path, colour_images)
    completed = _run_python("-c", _TWO_DEVICES_SCRIPT, tiny_module, folder, "5")
    result = json.loads(completed.stdout.splitlines()[-1])
    assert (result["one"]["replicas"], result["two"]["replicas"]) == (1, 2)
    assert result["default_batch_size"] == 2 * devices.CPU_BATCH_SIZE
    # Every batch is split in two (the last, partial one padded): the same numbers come out,
    # each under its own image's key.
    assert result["two"]["vectors"] == result["one"]["vectors"]
    assert len(result["one"]["vectors"]) == 36
    assert result["two"]["failed"] == result["one"]["failed"] == [
        os.path.join(folder, "red", "broken.jpg")]


def _cached_vectors(bottleneck_dir, module):
    cache = bottleneck_cache.BottleneckCache(bottleneck_cache.module_cache_dir(bottleneck_dir, module))
    cached = cache.load(cache.read_description()["feature_dim"])
    return dict(zip(cached.keys, cached.vectors))


def test_cli_flag_splits_the_cpu_and_caches_the_single_device_vectors(tmp_path, tiny_module,
                                                                        colour_images):
    output_dir = tmp_path / "out"
    completed = _run_python("-m", "retrain", f"--image_dir={colour_images}",
                            f"--tfhub_module={tiny_module}", f"--output_dir={output_dir}",
                            "--logical_cpu_devices=2", "--bottleneck_batch_size=7",
                            "--how_many_training_steps=5")
    assert "Using 2 devices" in completed.stderr
    module = modules.resolve_module(tiny_module)
    two_devices = _cached_vectors(str(output_dir / "bottlenecks"), module)

    images = dataset.find_images(colour_images).images
    one_device, _ = bottlenecks.compute_and_store(
        modules.load_feature_extractor(module), module, images, conftest.NullWriter(), 7, 10**8)
    assert sorted(two_devices) == sorted(one_device)
    for key, vector in one_device.items():
        np.testing.assert_array_equal(two_devices[key], vector)


def test_one_cpu_means_the_default_strategy():
    strategy = devices.distribution_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert not isinstance(strategy, tf.distribute.MirroredStrategy)
    assert devices.default_batch_size() == devices.CPU_BATCH_SIZE


def test_splitting_the_cpu_after_tensorflow_started_is_a_user_error():
    tf.constant(1.0)  # TensorFlow has run: its devices are fixed now.
    with pytest.raises(UserError, match="--logical_cpu_devices"):
        devices.configure_logical_cpu_devices(2)
    devices.configure_logical_cpu_devices(1)  # Nothing to split: fine at any time.
