"""Which devices the network runs on: one, or all visible GPUs through MirroredStrategy.

With several GPUs, bottleneck extraction and fine-tuning split each batch across them
(tf.distribute.MirroredStrategy), and fine-tuning averages the gradients. A machine without
GPUs can be split into logical CPU devices to run the same multi-device code paths: that is
how the tests check that several devices give the single-device result.
"""

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


def default_batch_size():
    """Images per forward pass: 16 per CPU device (the fastest measured on CPU in
    scripts/benchmark.py), 64 per GPU, times the devices distribution_strategy() uses."""
    per_device = 64 if tf.config.list_physical_devices("GPU") else 16
    return per_device * max(len(_parallel_devices()), 1)


def _parallel_devices():
    """The logical devices distribution_strategy() spreads work over ([]: just one device)."""
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    return gpus if len(gpus) > 1 else cpus if not gpus and len(cpus) > 1 else []
