"""The on-disk bottleneck cache: append-only shard files, each written atomically.

Layout: <bottleneck_dir>/<module folder>/shard-*.npy, where the module folder is named after
the module handle, the image size and a digest of the module's identity, so each module and
size gets its own cache. A shard is one .npy file of records (content key, feature vector):
the key is the SHA-1 of the image file's bytes, so a changed image misses the cache and a
renamed or moved one still hits it.

Why shards: a writer buffers vectors and writes a whole shard to a temporary name, then
renames it into place. A run killed at any moment leaves complete shards (and perhaps a
temporary file, ignored and cleaned later); two runs sharing the folder write different
shards; the float32 payload is stored as it is, with 20 bytes of key per vector.

Reading maps the shards into memory (mmap) instead of reading them: a vector is copied out
only when it is needed, and the operating system can drop the pages again, so a cache
larger than memory can still be used (see retrain.features.row_store).
"""

import dataclasses
import glob
import hashlib
import io
import json
import mmap
import os
import re
import time
import uuid

from absl import logging
import numpy as np

from retrain.errors import UserError
from retrain.runtime import files
from retrain.runtime.precision import FLOAT32

_KEY_BYTES = 20  # SHA-1.
_SHARD_PATTERN = "shard-*.npy"
# Many small shards (from many short or interrupted runs) are merged when loading, once
# there are more than this many of them.
_COMPACT_ABOVE_SHARDS = 32
# A shard this large is never merged again, and merging stops growing a shard at the target
# size: each vector is rewritten a bounded number of times, whatever the size of the cache,
# and a compaction never holds more than one merged shard's worth of records at a time.
_SMALL_SHARD_BYTES = 64 << 20
_TARGET_SHARD_BYTES = 256 << 20
# Keys are read this many bytes of records at a time, releasing the pages read after each.
_KEY_CHUNK_BYTES = 16 << 20


def record_dtype(feature_dim):
    return np.dtype([("key", f"V{_KEY_BYTES}"), ("vector", "<f4", (feature_dim,))])


def module_cache_dir(bottleneck_dir, module, precision=FLOAT32):
    """The cache folder for one module at one image size, computed in one precision (see
    retrain.runtime.precision)."""
    height, width = module.image_size
    # preprocess-v2: images are resized on 8-bit pixels and large JPEGs decoded at a reduced
    # scale (retrain.data.preprocess), which changes vectors slightly from v1's.
    identity = f"{module.identity}|{height}x{width}|preprocess-v2"
    suffix = ""
    if precision != FLOAT32:  # float32 caches keep the folder they always had.
        identity, suffix = f"{identity}|{precision}", f"_{precision}"
    digest = hashlib.sha1(identity.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "~", module.handle).strip("~")[-60:]
    return os.path.join(bottleneck_dir, f"{readable}_{height}x{width}_{digest}{suffix}")


@dataclasses.dataclass
class CachedVectors:
    """Vectors found in the cache: keys[i] (bytes) has vectors[i] (float32 [D])."""

    keys: list
    vectors: np.ndarray  # float32 [num_cached, feature_dim]

    def lookup(self):
        return {key: row for row, key in enumerate(self.keys)}


class BottleneckCache:
    """Reads and appends bottleneck vectors for one module."""

    def __init__(self, directory):
        self.directory = directory

    def prepare(self, module_description):
        """Creates the folder (failing clearly if it cannot) and records which module it is for."""
        try:
            files.check_writable_dir(self.directory)
            description_path = os.path.join(self.directory, "module.json")
            if not os.path.exists(description_path):
                files.write_file_atomically(description_path,
                                            json.dumps(module_description, indent=2).encode() + b"\n")
        except OSError as error:
            raise files.write_error(self.directory, "--bottleneck_dir", error,
                                    what="the bottleneck cache") from error
        # Temporary shards of killed runs (a live writer renames its shard within seconds).
        files.remove_stale_entries(self.directory, lambda name: name.startswith(".tmp-"))

    def read_description(self):
        """The module.json written by `prepare` (holds "feature_dim"), or None if absent or bad."""
        try:
            with open(os.path.join(self.directory, "module.json"), encoding="utf-8") as description:
                return json.load(description)
        except (OSError, ValueError):
            return None

    def open_shards(self, feature_dim):
        """Maps every readable shard, merging small ones first if there are many.

        Unreadable shards are reported and ignored (their images will be recomputed).

        Returns:
          [structured record arrays (see record_dtype) backed by the shard files].
        """
        paths = self._shard_paths()
        sizes = {path: _file_size(path) for path in paths}
        small = [path for path in paths if sizes[path] < _SMALL_SHARD_BYTES]
        if len(small) <= _COMPACT_ABOVE_SHARDS:
            small = []
        merging = set(small)
        shards = [_read_shard(path, feature_dim) for path in paths if path not in merging]
        return [records for records in shards if records is not None] + self._compact(
            small, feature_dim)

    def load(self, feature_dim):
        """Every cached vector, in memory (for small caches and tests; see open_shards)."""
        shards = self.open_shards(feature_dim)
        keys = [bytes(key) for records in shards for key in records["key"]]
        vectors = [np.array(records["vector"]) for records in shards]
        vectors = np.concatenate(vectors) if vectors else np.zeros([0, feature_dim], np.float32)
        return CachedVectors(keys, vectors)

    def writer(self, feature_dim, flush_every=256):
        return ShardWriter(self.directory, feature_dim, flush_every)

    def _shard_paths(self):
        return sorted(glob.glob(os.path.join(glob.escape(self.directory), _SHARD_PATTERN)))

    def _compact(self, paths, feature_dim):
        """Merges the shards at paths into shards of up to the target size; returns them mapped.

        Old shards are removed only after the merged one is in place, and only those whose
        records were merged: another run sharing the cache may have added shards since.
        """
        merged, group, group_bytes = [], [], 0
        for path in paths:
            records = _read_shard(path, feature_dim)
            if records is None:
                continue
            if group and group_bytes + records.nbytes > _TARGET_SHARD_BYTES:
                merged += self._merge_group(group, feature_dim)
                group, group_bytes = [], 0
            group.append((path, records))
            group_bytes += records.nbytes
        return merged + self._merge_group(group, feature_dim)

    def _merge_group(self, group, feature_dim):
        """Writes one shard holding each key of the group once; returns [its mapped records]."""
        if len(group) < 2:
            return [records for _, records in group]
        keys = np.concatenate([_copy_keys(records) for _, records in group])
        _, first_rows = np.unique(keys, return_index=True)
        keep = np.zeros(len(keys), bool)
        keep[first_rows] = True
        try:
            path = _write_merged_shard(self.directory, [records for _, records in group], keep)
        except OSError as error:
            logging.warning("Could not compact the bottleneck cache (%s); continuing.", error)
            return [records for _, records in group]
        for old_path, _ in group:
            files.remove_quietly(old_path)
        records = _read_shard(path, feature_dim)
        # None: another run merged it away already; the old mappings still hold the records.
        return [records] if records is not None else [records for _, records in group]


class ShardWriter:
    """Buffers (key, vector) pairs and writes them out as shards of `flush_every` records."""

    def __init__(self, directory, feature_dim, flush_every):
        self._directory = directory
        self._dtype = record_dtype(feature_dim)
        self._flush_every = flush_every
        self._pending = []

    def add(self, key, vector):
        self._pending.append((key, vector))
        if len(self._pending) >= self._flush_every:
            self.flush()

    def flush(self):
        """Writes the buffered records as one shard.

        Raises:
          UserError: the shard cannot be written (a full disk, say). The buffered records are
            dropped (a re-run computes them again); the shards written before are intact.
        """
        if not self._pending:
            return
        records = np.empty(len(self._pending), self._dtype)
        records["key"] = [np.void(key) for key, _ in self._pending]
        records["vector"] = np.stack([vector for _, vector in self._pending])
        self._pending = []
        try:
            _write_shard(self._directory, records)
        except OSError as error:
            user_error = files.write_error(self._directory, "--bottleneck_dir", error,
                                           what="the bottleneck cache")
            raise UserError(f"{user_error} The vectors cached so far are kept.") from error


def locate_keys(shards, keys):
    """Finds each key's record among the shards' records laid end to end.

    Args:
      shards: [structured record arrays] (from open_shards).
      keys: [bytes], 20-byte content keys.

    Returns:
      int64 [len(keys)]: the record's position, or -1 for a key that is not cached.
    """
    key_dtype = np.dtype(f"V{_KEY_BYTES}")
    wanted = np.frombuffer(b"".join(keys), key_dtype)
    cached = np.concatenate([_copy_keys(records) for records in shards] + [np.zeros(0, key_dtype)])
    if len(cached) == 0:
        return np.full(len(wanted), -1, np.int64)
    order = np.argsort(cached, kind="stable")
    cached = cached[order]
    slots = np.minimum(np.searchsorted(cached, wanted), len(cached) - 1)
    return np.where(cached[slots] == wanted, order[slots], -1).astype(np.int64)


def _copy_keys(records):
    """The keys of a mapped shard, read in chunks whose pages are released as it goes."""
    keys = np.empty(len(records), records.dtype["key"])
    chunk = max(1, _KEY_CHUNK_BYTES // records.dtype.itemsize)
    for start in range(0, len(records), chunk):
        keys[start:start + chunk] = records["key"][start:start + chunk]
        release_pages(records)
    return keys


def release_pages(records):
    """Lets the operating system drop the memory pages of a mapped shard that were read.

    The file's pages stay in the page cache, so reading them again is cheap; they just stop
    counting towards this process's memory.
    """
    mapping = records
    while mapping is not None and not isinstance(mapping, mmap.mmap):
        mapping = mapping.obj if isinstance(mapping, memoryview) else getattr(mapping, "base", None)
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


def _write_shard(directory, records):
    # np.save straight to a file reports a short write (a full disk) as an OSError without
    # its errno; serialising first and writing the bytes keeps the operating system's error.
    encoded = io.BytesIO()
    np.save(encoded, records, allow_pickle=False)
    return _write_shard_file(directory, lambda shard_file: shard_file.write(encoded.getbuffer()))


def _write_merged_shard(directory, shards, keep):
    """Writes the records of shards whose flag in keep (bool, over all records in order) is set,
    one shard at a time, so memory holds at most one source shard's selection."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {
        "descr": np.lib.format.dtype_to_descr(shards[0].dtype), "fortran_order": False,
        "shape": (int(keep.sum()),)})

    def write(shard_file):
        shard_file.write(header.getvalue())  # The magic string, the version and the header.
        start = 0
        for records in shards:
            shard_file.write(records[keep[start:start + len(records)]].tobytes())
            start += len(records)
            release_pages(records)

    return _write_shard_file(directory, write)


def _write_shard_file(directory, write):
    """Calls write(file) on a temporary file, then renames it to a new shard name; returns it."""
    name = f"shard-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.npy"
    target = os.path.join(directory, name)
    temporary = os.path.join(directory, f".tmp-{name}")
    try:
        with open(temporary, "wb") as shard_file:
            write(shard_file)
            shard_file.flush()
            os.fsync(shard_file.fileno())
        os.replace(temporary, target)
    except BaseException:
        files.remove_quietly(temporary)
        raise
    return target


def _read_shard(path, feature_dim):
    """Maps a shard: structured records [n] backed by the file, or None if it is unusable."""
    try:
        with open(path, "rb") as shard_file:
            version = np.lib.format.read_magic(shard_file)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran_order, dtype = read_header(shard_file)
            offset = shard_file.tell()
            if dtype != record_dtype(feature_dim) or fortran_order or len(shape) != 1:
                logging.warning("Ignoring bottleneck shard %s: it holds %s, expected %d-d vectors.",
                                path, dtype, feature_dim)
                return None
            if offset + shape[0] * dtype.itemsize > os.fstat(shard_file.fileno()).st_size:
                raise ValueError("the file is shorter than its header says")
            if shape[0] == 0:
                return np.zeros(0, dtype)
            mapping = mmap.mmap(shard_file.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        return None  # Compacted away by a concurrent run; its records are in the merged shard.
    except (OSError, ValueError) as error:
        logging.warning("Ignoring unreadable bottleneck shard %s (%s); its images will be recomputed.",
                        path, error)
        return None
    return np.frombuffer(mapping, dtype, count=shape[0], offset=offset)


def _file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # Gone (compacted by another run): reading it will say so.
