"""Torture: the disk fills up while caching, or a file-size limit is hit.

Each must stop with a one-line UserError naming the folder and the fix, leave the cache
consistent, and a re-run after freeing space must complete computing only what is missing.
"""

import contextlib
import glob
import os
import resource
import subprocess

import pytest

from conftest import fast_config, write_solid_colour_images
from retrain import pipeline
from retrain.errors import UserError
from retrain.features import bottleneck_cache
import processes

PER_CLASS = 200  # 600 vectors: two full shards and a partial one.


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    return write_solid_colour_images(tmp_path_factory.mktemp("many") / "photos",
                                     per_class=PER_CLASS, size=(16, 12))


@contextlib.contextmanager
def small_tmpfs(path, size):
    """Mounts a tmpfs of `size` at path (skips the test where mounting is not allowed)."""
    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize_tmpfs(path, size):
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def cached_keys(bottleneck_dir):
    """Keys in the cache, loading each shard as the pipeline does (which reports bad ones)."""
    keys = set()
    for module_dir in glob.glob(os.path.join(bottleneck_dir, "*")):
        for path in glob.glob(os.path.join(module_dir, "shard-*.npy")):
            records = bottleneck_cache._read_shard(path, 6)  # pylint: disable=protected-access
            assert records is not None, f"corrupt shard {path}"
            keys.update(bytes(key) for key in records["key"])
        assert not glob.glob(os.path.join(module_dir, ".tmp-*")), "temporary file left behind"
    return keys


def test_disk_full_while_caching(tmp_path, many_images, tiny_module):
    # 24 KB: module.json (one 4 KB page) and one 11 KB shard fit, the second shard does not.
    with small_tmpfs(tmp_path / "disk", "24k") as disk:
        config = fast_config(many_images, tiny_module, tmp_path / "out", bottleneck_dir=str(disk),
                             how_many_training_steps=10)
        with pytest.raises(UserError, match=r"Cannot write the bottleneck cache to '.*disk.*' "
                           r"\(No space left on device\); free some space there, or pass "
                           "--bottleneck_dir"):
            pipeline.run(config)
        cached = cached_keys(str(disk))
        assert 0 < len(cached) < 3 * PER_CLASS
        assert not (tmp_path / "out" / "saved_model").exists()
        resize_tmpfs(disk, "1m")  # Space freed.
        result = pipeline.run(config)
        assert result.bottlenecks_computed == 3 * PER_CLASS - len(cached)
        assert len(cached_keys(str(disk))) == 3 * PER_CLASS


def test_disk_full_while_exporting(tmp_path, many_images, tiny_module):
    cache = tmp_path / "cache"
    pipeline.run(fast_config(many_images, tiny_module, tmp_path / "first", bottleneck_dir=str(cache),
                             how_many_training_steps=10))
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        # The audit off: its files would fill this disk before the export is reached.
        config = fast_config(many_images, tiny_module, disk / "out", bottleneck_dir=str(cache),
                             how_many_training_steps=10, audit=False)
        with pytest.raises(UserError, match=r"Cannot write the model to '.*disk/out/saved_model' "
                           r"\(No space left on device\); free some space there, or pass "
                           "--saved_model_dir"):
            pipeline.run(config)
        # Only the empty base folder of the version folder may be left.
        assert not (disk / "out" / "saved_model" / "1").exists()
        assert not glob.glob(str(disk / "out" / "saved_model" / ".tmp-*")), \
            "half-written model left behind"


def test_disk_full_with_every_output_on(tmp_path, many_images, tiny_module):
    """The default outputs (the audit's files, the training log, summaries, the model): whichever
    write meets the full disk, the run stops with one UserError naming the reason and the fix."""
    cache = tmp_path / "cache"
    pipeline.run(fast_config(many_images, tiny_module, tmp_path / "first", bottleneck_dir=str(cache),
                             how_many_training_steps=10, audit=False))
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        config = fast_config(many_images, tiny_module, disk / "out", bottleneck_dir=str(cache),
                             how_many_training_steps=10)
        with pytest.raises(UserError, match=r"Cannot write .* to '.*disk/out.*' \(No space left "
                           r"on device\); free some space there, or pass --"):
            pipeline.run(config)
        assert not glob.glob(str(disk / "out" / "**" / ".tmp-*"), recursive=True), \
            "half-written file left behind"


def limit_file_size(size):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def test_file_size_limit_while_caching_via_cli(tmp_path, many_images, tiny_module):
    cache = tmp_path / "cache"
    argv = processes.retrain_argv(many_images, tiny_module, tmp_path / "out",
                                  bottleneck_dir=cache, how_many_training_steps=10)
    # Shards are 11 KB; module.json and the rest fit under 8 KB. Python ignores SIGXFSZ, so
    # the write fails with EFBIG ("File too large") as it would on a full quota.
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                               env=processes.cli_environment(), preexec_fn=limit_file_size(8000),
                               check=False)
    errors = [line for line in completed.stderr.splitlines() if line.startswith("retrain: error:")]
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    assert len(errors) == 1 and "File too large" in errors[0] and str(cache) in errors[0]
    cached = cached_keys(str(cache))
    result = pipeline.run(fast_config(many_images, tiny_module, tmp_path / "out",
                                      bottleneck_dir=str(cache), how_many_training_steps=10))
    assert result.bottlenecks_computed == 3 * PER_CLASS - len(cached)
