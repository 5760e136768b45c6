"""Tests of the torch-free legacy PyTorch reader; no TensorFlow needed."""

import collections
import os
import pickle
import sys
import types

import numpy as np
import pytest

from retrain.errors import UserError
from retrain.features.backbones import BUILTIN_BACKBONES
from retrain.features.backbones import builder
from retrain.features.backbones import torch_weights

_HEADER = (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})


class _Storage:
    """A flat array that the writer below pickles as a torch storage persistent id."""

    def __init__(self, key, array):
        self.key = key
        self.array = array


class _Tensor:
    """A view of a _Storage, pickled through the fake torch._utils._rebuild_tensor_v2."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _install_fake_torch(monkeypatch):
    """Puts a stand-in `torch` into sys.modules so pickle can name its classes, as torch would."""
    fake_torch = types.ModuleType("torch")
    fake_utils = types.ModuleType("torch._utils")
    fake_torch.FloatStorage = type("FloatStorage", (), {"__module__": "torch"})
    fake_torch.LongStorage = type("LongStorage", (), {"__module__": "torch"})
    fake_utils._rebuild_tensor_v2 = lambda *args: None
    fake_utils._rebuild_tensor_v2.__module__ = "torch._utils"
    fake_utils._rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    fake_torch._utils = fake_utils
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)
    return fake_torch


def _write_legacy_file(path, state_dict, fake_torch):
    """Writes {name: _Tensor} in the legacy torch.save format (as torch < 1.6 did)."""
    storages = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if not isinstance(obj, _Storage):
                return None
            storages[obj.key] = obj.array
            is_long = obj.array.dtype == np.int64
            storage_type = fake_torch.LongStorage if is_long else fake_torch.FloatStorage
            return ("storage", storage_type, obj.key, "cpu", obj.array.size, None)

        def reducer_override(self, obj):
            if isinstance(obj, _Tensor):
                hooks = collections.OrderedDict()
                arguments = (obj.storage, obj.offset, obj.size, obj.stride, False, hooks)
                return fake_torch._utils._rebuild_tensor_v2, arguments
            return NotImplemented

    with open(path, "wb") as file:
        for value in _HEADER:
            pickle.dump(value, file, protocol=2)
        Pickler(file, protocol=2).dump(collections.OrderedDict(state_dict))
        pickle.dump(sorted(storages), file, protocol=2)
        for key in sorted(storages):
            file.write(np.int64(storages[key].size).tobytes())
            file.write(storages[key].astype(storages[key].dtype.newbyteorder("<")).tobytes())


def test_reads_offsets_strides_and_dtypes(tmp_path, monkeypatch):
    fake_torch = _install_fake_torch(monkeypatch)
    matrix = np.arange(6, dtype=np.float32)
    shared = _Storage("1", matrix)
    state_dict = {
        "dense": _Tensor(shared, 0, (2, 3), (3, 1)),
        "transposed": _Tensor(shared, 0, (3, 2), (1, 3)),
        "offset": _Tensor(shared, 4, (2,), (1,)),
        "count": _Tensor(_Storage("2", np.array([7], dtype=np.int64)), 0, (1,), (1,)),
    }
    path = tmp_path / "tiny.pth"
    _write_legacy_file(path, state_dict, fake_torch)
    monkeypatch.delitem(sys.modules, "torch")  # The reader must not need torch.
    loaded = torch_weights.load_state_dict(str(path))
    assert list(loaded) == ["dense", "transposed", "offset", "count"]
    np.testing.assert_array_equal(loaded["dense"], matrix.reshape(2, 3))
    np.testing.assert_array_equal(loaded["transposed"], matrix.reshape(2, 3).T)
    np.testing.assert_array_equal(loaded["offset"], [4.0, 5.0])
    assert loaded["count"].dtype == np.int64 and loaded["count"].tolist() == [7]


def test_reads_the_efficientnet_lite0_package_file():
    path = builder.find_package_weight_file(BUILTIN_BACKBONES["efficientnet_lite0"])
    state_dict = torch_weights.load_state_dict(path)
    assert len(state_dict) == 296
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert state_dict["_fc.weight"].dtype == np.float32
    assert np.isfinite(state_dict["_fc.weight"]).all()


class _RunsCommand:
    """Unpickling this calls os.system(command): what a crafted weight file would do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _EvaluatesCode(_RunsCommand):
    """Unpickling this calls eval() on code that runs the command."""

    def __reduce__(self):
        return eval, (f"__import__('os').system({self.command!r})",)


@pytest.mark.parametrize("payload_class", [_RunsCommand, _EvaluatesCode])
@pytest.mark.parametrize("position", ["magic_number", "state_dict"])
def test_refuses_a_pickle_that_would_run_a_command(tmp_path, payload_class, position):
    marker = tmp_path / "command_ran"
    payload = payload_class(f"touch {marker}")
    path = tmp_path / "crafted.pth"
    with open(path, "wb") as file:
        if position == "magic_number":
            pickle.dump(payload, file, protocol=2)
        else:
            for value in _HEADER:
                pickle.dump(value, file, protocol=2)
            pickle.dump(collections.OrderedDict(weight=payload), file, protocol=2)
    with pytest.raises(UserError, match="Refusing to load .*crafted.pth.*(system|eval)"):
        torch_weights.load_state_dict(str(path))
    assert not marker.exists()


def test_refuses_a_zip_format_file(tmp_path):
    path = tmp_path / "new_format.pth"
    path.write_bytes(b"PK\x03\x04 not a legacy pickle")
    with pytest.raises(UserError, match="new_format.pth"):
        torch_weights.load_state_dict(str(path))


def test_refuses_a_truncated_file(tmp_path):
    source = builder.find_package_weight_file(BUILTIN_BACKBONES["efficientnet_lite0"])
    path = tmp_path / "truncated.pth"
    with open(source, "rb") as file:
        path.write_bytes(file.read(200_000))
    with pytest.raises(UserError, match="truncated.pth is truncated"):
        torch_weights.load_state_dict(str(path))
