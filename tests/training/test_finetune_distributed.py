"""Fine-tuning on two devices (the CPU split in two logical devices, through MirroredStrategy)
reaches the weights one device reaches.

Each run is its own process: the CPU can be split only before TensorFlow first uses it.
"""

import os
import subprocess
import sys

import numpy as np

from retrain.training import finetune
from retrain.training import finetune_checkpoint

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_RUN = """
import sys
from retrain.runtime import devices
devices.configure_logical_cpu_devices(int(sys.argv[1]))
sys.path.insert(0, "tests")
from conftest import fast_config
from retrain import pipeline
config = fast_config(sys.argv[2], sys.argv[3], sys.argv[4], learning_rate=0.0, fine_tune=True,
                     fine_tune_steps=12, fine_tune_eval_interval=4, fine_tune_learning_rate=0.05,
                     fine_tune_batch_size=8)
pipeline.run(config)
print("replicas:", devices.distribution_strategy().num_replicas_in_sync)
"""


def _fine_tune_on(device_count, tiny_module, colour_images, output_dir):
    completed = subprocess.run(
        [sys.executable, "-c", _RUN, str(device_count), colour_images, tiny_module,
         str(output_dir)], cwd=_ROOT, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"replicas: {device_count}" in completed.stdout
    path = os.path.join(output_dir, "checkpoints", finetune.CHECKPOINT_FOLDER,
                        finetune_checkpoint.LATEST_FILE)
    with np.load(path) as saved:
        return {name: saved[name] for name in saved.files if name != "metadata"}


def test_two_devices_reach_the_single_device_weights(tmp_path, tiny_module, colour_images):
    one = _fine_tune_on(1, tiny_module, colour_images, tmp_path / "one")
    two = _fine_tune_on(2, tiny_module, colour_images, tmp_path / "two")
    assert one.keys() == two.keys()
    kernel_before = np.array([[1.0, -1.0, 0.5], [0.5, 1.0, -1.0], [-1.0, 0.5, 1.0]])
    assert not np.allclose(one["array_00000"], kernel_before, atol=1e-4)  # it did train
    for name in one:
        # Not bit-identical: two devices sum two half-batch gradients where one device sums
        # the whole batch, so float rounding differs in the last bits.
        np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-6)
