"""Which devices the network runs on: one, or all visible GPUs through MirroredStrategy.

With several GPUs, bottleneck extraction and fine-tuning split each batch across them
(tf.distribute.MirroredStrategy), and fine-tuning averages the gradients. A machine without
GPUs can be split into logical CPU devices to run the same multi-device code paths: that is
how the tests check that several devices give the single-device result.
"""

import os

from absl import logging
import tensorflow as tf

from retrain.errors import UserError


def configure_logical_cpu_devices(count):
    """Splits the CPU into `count` logical devices (1: leave it whole).

    Must run before TensorFlow first uses a device; a later call raises UserError.
    """
    if count <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as error:
        raise UserError(f"Cannot split the CPU into {count} logical devices now ({error}); "
                        "pass --logical_cpu_devices before anything runs on TensorFlow.") from error


def distribution_strategy():
    """MirroredStrategy over all GPUs when there are several, or over several logical CPUs.

    Otherwise the default (single-device) strategy, which adds no overhead.
    """
    devices = _parallel_devices()
    if not devices:
        return tf.distribute.get_strategy()
    logging.info("Using %d devices: %s", len(devices), ", ".join(d.name for d in devices))
    return tf.distribute.MirroredStrategy([device.name for device in devices])


# Images per forward pass on one CPU device, where batch_tuning does not choose by timing
# (small jobs, several devices). The fastest size varies by machine: on 2 cores
# efficientnet_lite0 ran at 134, 150 and 155 images/s at 4, 8 and 16 one week (lite2 72,
# 69, 75; ResNet50 19, 21, 22), and at 97, 94 and about 80 an earlier week. 8 was always
# within 8% of the fastest; 4 and 16 each lost 14-18% in one of those weeks.
CPU_BATCH_SIZE = 8
# On one core smaller batches run faster (they stay in the core's caches): pinned to one core
# (taskset), lite0 ran at 99.7-99.9, 91.0 and 88.6-89.3 images/s at 4, 8 and 16 images per
# pass, lite2 at 47.3, 44.9 and 42.7 (6 turns each, in turns; on both cores lite0's 4 was 9%
# slower than its 16).
ONE_CORE_BATCH_SIZE = 4
GPU_BATCH_SIZE = 64


def default_batch_size():
    """Images per forward pass: CPU_BATCH_SIZE per CPU device (ONE_CORE_BATCH_SIZE when the
    network has one thread), GPU_BATCH_SIZE per GPU, times the devices
    distribution_strategy() uses."""
    if tf.config.list_physical_devices("GPU"):
        per_device = GPU_BATCH_SIZE
    else:
        per_device = ONE_CORE_BATCH_SIZE if network_threads() == 1 else CPU_BATCH_SIZE
    return per_device * parallel_device_count()


def usable_cores():
    """The CPU cores this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def network_threads():
    """How many threads TensorFlow runs one operation on: its intra-op setting if one was
    made, else its default, one per core this process may use."""
    return tf.config.threading.get_intra_op_parallelism_threads() or usable_cores()


def parallel_device_count():
    """How many devices distribution_strategy() spreads each batch over (1: just one)."""
    return max(len(_parallel_devices()), 1)


def _parallel_devices():
    """The logical devices distribution_strategy() spreads work over ([]: just one device)."""
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    return gpus if len(gpus) > 1 else cpus if not gpus and len(cpus) > 1 else []
