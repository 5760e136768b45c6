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
"""

import dataclasses
import glob
import hashlib
import io
import json
import os
import re
import time
import uuid

from absl import logging
import numpy as np

from retrain import files
from retrain.errors import UserError

_KEY_BYTES = 20  # SHA-1.
_SHARD_PATTERN = "shard-*.npy"
# Many small shards (from many short or interrupted runs) are merged into one when loading.
_COMPACT_ABOVE_SHARDS = 32


def record_dtype(feature_dim):
    return np.dtype([("key", f"V{_KEY_BYTES}"), ("vector", "<f4", (feature_dim,))])


def module_cache_dir(bottleneck_dir, module):
    """The cache folder for one module at one image size."""
    height, width = module.image_size
    identity = f"{module.identity}|{height}x{width}|preprocess-v1"
    digest = hashlib.sha1(identity.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "~", module.handle).strip("~")[-60:]
    return os.path.join(bottleneck_dir, f"{readable}_{height}x{width}_{digest}")


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

    def load(self, feature_dim):
        """Reads every shard. Unreadable shards are reported and ignored (they will be recomputed)."""
        records, read_paths = [], []
        for path in self._shard_paths():
            shard = _read_shard(path, feature_dim)
            if shard is not None:
                records.append(shard)
                read_paths.append(path)
        if len(records) > _COMPACT_ABOVE_SHARDS:
            self._compact(records, read_paths)
        if not records:
            return CachedVectors([], np.zeros([0, feature_dim], np.float32))
        merged = np.concatenate(records)
        keys = [bytes(key) for key in merged["key"]]
        return CachedVectors(keys, np.ascontiguousarray(merged["vector"]))

    def writer(self, feature_dim, flush_every=256):
        return ShardWriter(self.directory, feature_dim, flush_every)

    def _shard_paths(self):
        return sorted(glob.glob(os.path.join(glob.escape(self.directory), _SHARD_PATTERN)))

    def _compact(self, records, read_paths):
        """Merges shards into one. Old shards are removed only after the merged one is in place.

        Only the shards whose records were merged are removed: another run sharing the cache
        may have added shards since they were listed.
        """
        merged = np.concatenate(records)
        _, unique_rows = np.unique(merged["key"], return_index=True)
        try:
            _write_shard(self.directory, merged[np.sort(unique_rows)])
        except OSError as error:
            logging.warning("Could not compact the bottleneck cache (%s); continuing.", error)
            return
        for path in read_paths:
            files.remove_quietly(path)



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


def _write_shard(directory, records):
    name = f"shard-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.npy"
    target = os.path.join(directory, name)
    temporary = os.path.join(directory, f".tmp-{name}")
    # np.save straight to a file reports a short write (a full disk) as an OSError without
    # its errno; serialising first and writing the bytes keeps the operating system's error.
    encoded = io.BytesIO()
    np.save(encoded, records, allow_pickle=False)
    try:
        with open(temporary, "wb") as shard_file:
            shard_file.write(encoded.getbuffer())
            shard_file.flush()
            os.fsync(shard_file.fileno())
        os.replace(temporary, target)
    except BaseException:
        files.remove_quietly(temporary)
        raise


def _read_shard(path, feature_dim):
    try:
        records = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None  # Compacted away by a concurrent run; its records are in the merged shard.
    except (OSError, ValueError) as error:
        logging.warning("Ignoring unreadable bottleneck shard %s (%s); its images will be recomputed.",
                        path, error)
        return None
    if records.dtype != record_dtype(feature_dim):
        logging.warning("Ignoring bottleneck shard %s: it holds %s, expected %d-d vectors.",
                        path, records.dtype, feature_dim)
        return None
    return records
