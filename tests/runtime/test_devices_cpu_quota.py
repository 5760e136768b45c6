"""A cgroup CPU quota (`docker run --cpus`) sizes TensorFlow's threads and the readers
(retrain.runtime.devices.cpu_quota_cores, configure_threads)."""

import os
import subprocess
import sys
import uuid

import pytest

from retrain.runtime import devices

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_smallest_on_the_way_up_rounded_up(tmp_path):
    proc = tmp_path / "proc_cgroup"
    _write(proc, "0::/a/b\n")
    root = tmp_path / "cgroup"
    _write(root / "a" / "b" / "cpu.max", "150000 100000\n")
    _write(root / "a" / "cpu.max", "max 100000\n")
    assert devices.cpu_quota_cores(str(proc), str(root)) == 2
    _write(root / "a" / "cpu.max", "50000 100000\n")
    assert devices.cpu_quota_cores(str(proc), str(root)) == 1
    _write(root / "a" / "cpu.max", "max 100000\n")
    _write(root / "a" / "b" / "cpu.max", "max 100000\n")
    assert devices.cpu_quota_cores(str(proc), str(root)) is None


def test_cgroup_v1_quota_read_at_the_mount_root_inside_a_container(tmp_path):
    proc = tmp_path / "proc_cgroup"
    # Without a cgroup namespace a container sees its host-side path, which is not mounted.
    _write(proc, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    root = tmp_path / "cgroup"
    _write(root / "cpu" / "cpu.cfs_quota_us", "250000\n")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert devices.cpu_quota_cores(str(proc), str(root)) == 3
    _write(root / "cpu" / "cpu.cfs_quota_us", "-1\n")
    assert devices.cpu_quota_cores(str(proc), str(root)) is None


def test_no_cgroup_file_means_no_quota(tmp_path):
    assert devices.cpu_quota_cores(str(tmp_path / "missing"), str(tmp_path)) is None


_UNDER_THE_QUOTA = """
import os, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as procs:
    procs.write(str(os.getpid()))
from absl import logging
logging.set_verbosity(logging.INFO)
import tensorflow as tf
from retrain.data import preprocess
from retrain.runtime import batch_tuning
from retrain.runtime import devices
devices.configure_threads()
print(tf.config.threading.get_intra_op_parallelism_threads(),
      batch_tuning.batch_size_candidates(None, batch_tuning.MIN_IMAGES_TO_TUNE),
      preprocess.reader_threads())
"""

_V1_CPU = "/sys/fs/cgroup/cpu"


@pytest.mark.skipif(not (hasattr(os, "geteuid") and os.geteuid() == 0
                         and os.access(_V1_CPU, os.W_OK)
                         and os.path.exists(os.path.join(_V1_CPU, "cpu.cfs_quota_us"))
                         and len(os.sched_getaffinity(0)) >= 2),
                    reason="needs root, a writable cgroup v1 cpu controller and 2 cores")
def test_a_process_under_a_one_cpu_quota_runs_tensorflow_on_one_thread():
    """A real cgroup with a quota of one CPU, as `docker run --cpus 1` makes."""
    group = os.path.join(_V1_CPU, f"retrain-test-{uuid.uuid4().hex[:8]}")
    os.mkdir(group)
    try:
        with open(os.path.join(group, "cpu.cfs_period_us"), "w", encoding="utf-8") as period:
            period.write("100000")
        with open(os.path.join(group, "cpu.cfs_quota_us"), "w", encoding="utf-8") as quota:
            quota.write("100000")
        completed = subprocess.run([sys.executable, "-c", _UNDER_THE_QUOTA, group],
                                   capture_output=True, text=True, timeout=300, cwd=_ROOT,
                                   check=False)
    finally:
        os.rmdir(group)  # Empty again: the process has exited.
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split("\n")[-2] == "1 (4, 16) 1"
    assert "The CPU quota allows 1 of" in completed.stderr
