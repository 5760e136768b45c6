"""Torture: a read-only image folder, and running as an ordinary (non-root) user.

Root can read and write anything, so the permission cases run in a subprocess as "nobody"
(uid 65534) when the suite runs as root. Everything that process uses (the code, the tiny
module, the images) lives in a world-readable folder outside pytest's private tmp folder.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import write_solid_colour_images
import processes
import torture_images as make

NOBODY = 65534

# Runs in the unprivileged process: each case calls the library and records the outcome.
CASES_SCRIPT = r"""
import json, os, sys
from retrain import pipeline
from retrain.config import RetrainConfig
from retrain.data import dataset
from retrain.errors import UserError

root, module, uid = sys.argv[1], sys.argv[2], int(sys.argv[3])
if uid != os.getuid():
    # Dropped here rather than before exec: the interpreter may live where only root can read.
    pipeline.modules.load_feature_extractor  # Everything is imported while still root.
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
def config(image_dir, output_dir):
    return RetrainConfig(image_dir=image_dir, output_dir=output_dir, tfhub_module=module,
                         how_many_training_steps=10, validation_percentage=0,
                         testing_percentage=0, bottleneck_batch_size=8)
def outcome(function):
    try:
        value = function()
    except UserError as error:
        return {"error": str(error)}
    return {"ok": value}
def skipped(image_dir):
    collection = dataset.find_images(image_dir)
    return sorted([os.path.relpath(skip.path, image_dir), skip.reason]
                  for skip in collection.skipped)
def listing(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else None
results = {
    "unreadable image_dir": outcome(lambda: skipped(f"{root}/locked")),
    "unreadable file and folder": outcome(lambda: skipped(f"{root}/partly")),
    "read-only image_dir": outcome(lambda: pipeline.run(
        config(f"{root}/readonly", f"{root}/mine/out")).labels),
    "unwritable output_dir": outcome(lambda: pipeline.run(
        config(f"{root}/readonly", f"{root}/roots/out")).labels),
}
results["unwritable output_dir listing"] = listing(f"{root}/roots")
print("RESULTS " + json.dumps(results))
"""


@contextlib.contextmanager
def read_only_bind_mount(source, target):
    """target shows source read-only (a real EROFS, as a :ro volume gives); skips if not allowed."""
    os.makedirs(target)
    mounted = subprocess.run(["mount", "--bind", source, target], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)
        yield target
    finally:
        subprocess.run(["umount", "-l", target], check=False)


@pytest.fixture()
def shared_root(tiny_module):
    root = tempfile.mkdtemp(prefix="retrain-torture-")
    os.chmod(root, 0o755)
    shutil.copytree(tiny_module, os.path.join(root, "module"))
    yield root
    subprocess.run(["chmod", "-R", "u+rwX", root], check=False)
    shutil.rmtree(root, ignore_errors=True)


def build_folders(root):
    colours = {"red": make.RED, "blue": make.BLUE}
    write_solid_colour_images(os.path.join(root, "locked"), colours, per_class=2)
    os.chmod(os.path.join(root, "locked"), 0o000)
    partly = write_solid_colour_images(os.path.join(root, "partly"), colours, per_class=2)
    write_solid_colour_images(os.path.join(partly, "red", "sub"), {"inner": make.RED}, per_class=2)
    os.chmod(os.path.join(partly, "red", "red_000.jpg"), 0o000)
    os.chmod(os.path.join(partly, "red", "sub"), 0o000)
    write_solid_colour_images(os.path.join(root, "source"), colours, per_class=3)
    os.makedirs(os.path.join(root, "mine"))
    os.makedirs(os.path.join(root, "roots"))  # Owned by root, mode 755: not writable by nobody.
    subprocess.run(["chmod", "-R", "a+rX", os.path.join(root, "source"), os.path.join(root, "module")],
                   check=True)


def run_as_nobody(root):
    uid = NOBODY if os.geteuid() == 0 else os.geteuid()
    os.chown(os.path.join(root, "mine"), uid, uid)
    environment = dict(processes.cli_environment(), HOME=os.path.join(root, "mine"))
    completed = subprocess.run(
        [sys.executable, "-c", CASES_SCRIPT, root, os.path.join(root, "module"), str(uid)],
        capture_output=True, text=True, timeout=300, env=environment, cwd=root, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULTS ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    return json.loads(lines[0][len("RESULTS "):])


def test_permissions_as_an_ordinary_user(shared_root):
    build_folders(shared_root)
    with read_only_bind_mount(os.path.join(shared_root, "source"),
                              os.path.join(shared_root, "readonly")):
        results = run_as_nobody(shared_root)
    assert "Cannot read --image_dir" in results["unreadable image_dir"]["error"]
    assert "check its permissions" in results["unreadable image_dir"]["error"]
    assert results["unreadable file and folder"]["ok"] == [
        ["red/red_000.jpg", "cannot read: Permission denied"],
        ["red/sub", "cannot read folder: Permission denied"],
    ]
    assert results["read-only image_dir"]["ok"] == ["blue", "red"]
    error = results["unwritable output_dir"]["error"]
    assert "Cannot write to" in error and "roots/out" in error and "--output_dir" in error
    assert results["unwritable output_dir listing"] == []
