"""Which devices the network runs on: one, or all visible GPUs through MirroredStrategy.

With several GPUs, bottleneck extraction and fine-tuning split each batch across them
(tf.distribute.MirroredStrategy), and fine-tuning averages the gradients. A machine without
GPUs can be split into logical CPU devices to run the same multi-device code paths: that is
how the tests check that several devices give the single-device result.
"""

import math
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


# Images per forward pass on one CPU device whose operations use several threads (fine-tuning,
# logical devices), where batch_tuning does not choose by timing (small jobs, several
# devices). The fastest size varies by machine: on 2 cores efficientnet_lite0 ran at 134, 150
# and 155 images/s at 4, 8 and 16 one week (lite2 72, 69, 75; ResNet50 19, 21, 22), and at
# 97, 94 and about 80 an earlier week. 8 was always within 8% of the fastest; 4 and 16 each
# lost 14-18% in one of those weeks.
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
    """The CPU cores this process may run on: its affinity mask (where the OS has one), or
    fewer if its cgroup's CPU quota allows fewer (`docker run --cpus`)."""
    cores, quota = _affinity_cores(), cpu_quota_cores()
    return min(cores, quota) if quota else cores


def _affinity_cores():
    """The cores in this process's affinity mask (where the OS has one): TensorFlow's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


# Up to this many cores, a forward-only job runs one pass per core (configure_threads); on more,
# one pass over every core, as TensorFlow does by default. Each pass is a Python thread, and
# each call costs its calling thread 3-4 ms of CPU (Python and TensorFlow's dispatch, part of
# it holding the GIL; how much was not measured) against 48 ms for the call at 4 images on one
# core of this machine, 190 ms at 16: a dozen or more passes at 4 images could queue for the
# GIL. Only 2 cores were measured (1.12-1.18x); above 8 the old way is kept until a larger
# machine shows the gain.
MAX_FORWARD_STREAMS = 8


def configure_threads(forward_streams_allowed=True):
    """Sizes TensorFlow's thread pools for this process. Must run before TensorFlow runs anything.

    Without a GPU, on 2 to MAX_FORWARD_STREAMS cores, and when the job only runs the network
    forward on one device (forward_streams_allowed: no fine-tuning, no logical CPU devices),
    each operation runs on one thread and as many run at once as there are cores: the
    bottleneck stage and label_image then run one forward pass per core at a time
    (forward_streams(), streams.py). On the 2-core machines here that ran efficientnet_lite0's
    stage at 1.12-1.18 times the rate of one pass on both cores, and trained the new layer no
    slower (4000 steps: 3.1-3.8 s against 3.5-5.0).
    Fine-tuning trains one network at a time, so it keeps one pass over every core.

    Otherwise the pools follow the CPU quota when it is below the cores. TensorFlow sizes them
    by the affinity mask, which `docker run --cpus 1` leaves at every core of the host: its
    threads then take turns on one CPU's worth of time. In a cgroup with a one-CPU quota on 2
    cores, lite0's forward pass ran at 90 images/s on TensorFlow's 2 threads and at 97 on 1
    (100 at 4 images per pass, which batch_tuning then tries).
    """
    affinity, cores = _affinity_cores(), usable_cores()  # Fewer cores: the quota allows fewer.
    quota_note = f"The CPU quota allows {cores} of {affinity} cores: " if cores < affinity else ""
    passes = forward_pass_cores()
    if (forward_streams_allowed and 1 < passes <= MAX_FORWARD_STREAMS
            and not tf.config.list_physical_devices("GPU")):
        if _try_set_threads(1, passes, quota_note):
            logging.info("%sTensorFlow runs %d forward passes at once, one per core, each on one "
                         "thread.", quota_note, passes)
        return
    if quota_note and _try_set_threads(cores, cores, quota_note):
        logging.info("%sTensorFlow runs on %d thread%s.", quota_note, cores,
                     "" if cores == 1 else "s")


def _try_set_threads(intra_op, inter_op, quota_note):
    """set_tensorflow_threads, or a warning (and False) if TensorFlow already ran something."""
    try:
        set_tensorflow_threads(intra_op, inter_op)
    except RuntimeError as error:  # TensorFlow already ran something (in a test, a notebook).
        logging.warning("%sTensorFlow's threads can no longer be changed (%s).", quota_note, error)
        return False
    return True


def set_tensorflow_threads(intra_op, inter_op=None):
    """TensorFlow's intra-op (threads per operation) and inter-op (operations at once) thread
    pools; inter_op None: as many as intra_op.

    Raises RuntimeError once TensorFlow has run anything.
    """
    tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op or intra_op)


def forward_streams():
    """How many forward passes the bottleneck stage and label_image run at once.

    One per core this process may use ($RETRAIN_FORWARD_PASSES when set) when TensorFlow runs
    each operation on one thread (as configure_threads sets it up) and the network runs on one
    CPU device; else 1.
    """
    if tf.config.threading.get_intra_op_parallelism_threads() != 1:
        return 1
    if tf.config.list_physical_devices("GPU") or parallel_device_count() > 1:
        return 1
    cores = forward_pass_cores()
    return min(tf.config.threading.get_inter_op_parallelism_threads() or cores, cores)


# Set in tests to run several forward passes at once on a one-core machine (the path 2 to 8
# cores take, where two passes in two threads once crashed label_image); unset in normal use.
FORWARD_PASSES_ENVIRONMENT_VARIABLE = "RETRAIN_FORWARD_PASSES"


def forward_pass_cores():
    """The cores forward passes are counted against (int >= 1): $RETRAIN_FORWARD_PASSES when
    set, else usable_cores()."""
    value = os.environ.get(FORWARD_PASSES_ENVIRONMENT_VARIABLE, "").strip()
    if not value:
        return usable_cores()
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{FORWARD_PASSES_ENVIRONMENT_VARIABLE}={value!r} is not a number of "
                        f"forward passes; set it to 1 or more (e.g. 2), or unset it.")
    return int(value)


def cpu_quota_cores(proc_cgroup="/proc/self/cgroup", cgroup_root="/sys/fs/cgroup"):
    """The cores this process's cgroup CPU quota allows (rounded up), or None without one.

    Reads cgroup v2's cpu.max or v1's cpu.cfs_quota_us / cpu.cfs_period_us in the process's
    cgroup and the cgroups above it; inside a container whose cgroup path is not mounted as
    such, in the mount's root.
    """
    try:
        with open(proc_cgroup, encoding="utf-8") as lines:
            memberships = [line.rstrip("\n").split(":", 2) for line in lines
                           if line.count(":") >= 2]
    except OSError:
        return None
    quotas = []
    for _, controllers, path in memberships:
        if controllers == "":
            mount = cgroup_root
        elif "cpu" in controllers.split(","):
            mount = os.path.join(cgroup_root, "cpu")
            if not os.path.isdir(mount):
                mount = os.path.join(cgroup_root, controllers)
        else:
            continue
        quotas.extend(_quotas_up_to(mount, path))
    return max(math.ceil(min(quotas)), 1) if quotas else None


def _quotas_up_to(mount, path):
    """CPU quotas (in CPUs) of the cgroup at mount/path and each one above it, up to mount."""
    directory = os.path.join(mount, path.lstrip("/"))
    if not os.path.isdir(directory):
        directory = mount
    quotas = []
    while True:
        quota = _cgroup_quota(directory)
        if quota is not None:
            quotas.append(quota)
        if os.path.normpath(directory) == os.path.normpath(mount):
            return quotas
        directory = os.path.dirname(directory)


def _cgroup_quota(directory):
    """One cgroup's CPU quota in CPUs (v2 cpu.max or v1 cfs files), or None without one."""
    try:
        with open(os.path.join(directory, "cpu.max"), encoding="utf-8") as cpu_max:
            quota, period = cpu_max.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(directory, "cpu.cfs_quota_us"), encoding="utf-8") as quota_file:
            quota = int(quota_file.read())
        with open(os.path.join(directory, "cpu.cfs_period_us"), encoding="utf-8") as period_file:
            period = int(period_file.read())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


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
