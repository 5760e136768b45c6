"""Bottleneck vectors as one table of rows, read on demand from the mapped cache shards.

A RowStore behaves like a read-only float32 array [num_rows, feature_dim] for what training
and evaluation need (`.shape`, `len()`, indexing with an array of row numbers), but holds no
vectors itself: rows are copied out of the shard files (mapped with mmap) when asked for.
This lets a run use a cache larger than memory; `to_array` turns it into an ordinary array
when it fits, reading the shards once and in order.

Pages of the shard files that were read count towards the process's memory until released,
so the store releases them every _RELEASE_BYTES read: memory stays bounded however much of
the cache a run touches.
"""

import os

import numpy as np

from retrain.features import bottleneck_cache

# Rows are copied out in chunks of about this many bytes, so a large request (to_array, a
# whole split) never needs more than one chunk of temporary memory beyond its result.
_CHUNK_BYTES = 8 << 20
# Mapped pages read since the last release, at most (estimated, see _FAULT_AROUND_BYTES).
_RELEASE_BYTES = 16 << 20
# Linux maps the pages around a faulting page that are already in the page cache (64 KB by
# default), so reading one row can map that much.
_FAULT_AROUND_BYTES = 64 << 10


class RowStore:
    """Read-only float32 rows [num_rows, feature_dim], gathered from blocks of vectors.

    Row i is row (positions[i] - start of block b) of block b, where blocks are float32
    [rows, feature_dim] arrays laid end to end: the vector fields of mapped cache shards, or
    vectors held in memory (those computed by this run).
    """

    def __init__(self, blocks, positions, feature_dim, mapped_shards=()):
        """
        Args:
          blocks: [float32 array [rows, feature_dim]].
          positions: int64 [num_rows], indices into the blocks laid end to end.
          feature_dim: D.
          mapped_shards: the structured record arrays the mapped blocks are views of, whose
            pages are released as rows are read.
        """
        self._blocks = list(blocks)
        self._block_starts = np.cumsum([0] + [len(block) for block in self._blocks])[:-1]
        self._positions = np.asarray(positions, np.int64)
        self._mapped_shards = list(mapped_shards)
        self._unreleased_bytes = 0
        self.shape = (len(self._positions), int(feature_dim))
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    @classmethod
    def from_shards(cls, shards, positions, feature_dim, extra_vectors=None):
        """A store over mapped shards (record arrays), plus an optional float32 block [k, D] in
        memory whose rows follow the shards' in `positions`."""
        blocks = [records["vector"] for records in shards]
        if extra_vectors is not None and len(extra_vectors):
            blocks.append(extra_vectors)
        return cls(blocks, positions, feature_dim, shards)

    def __len__(self):
        return self.shape[0]

    @property
    def nbytes(self):
        """Bytes the rows take as an array in memory."""
        return self.shape[0] * self.shape[1] * 4

    def __getitem__(self, index):
        """Rows as a new float32 array: [k, D] for an array, list or slice of row numbers."""
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        rows = self._gather(self._positions[index.reshape(-1)])
        return rows[0] if index.ndim == 0 else rows

    def subset(self, rows):
        """A store of these rows (int array) of this one, sharing its blocks: nothing is copied."""
        return RowStore(self._blocks, self._positions[np.asarray(rows, np.int64)], self.shape[1],
                        self._mapped_shards)

    def to_array(self):
        """All rows as one float32 array [num_rows, D], in order."""
        return self[np.arange(len(self))]

    def __array__(self, dtype=None, copy=None):
        del copy  # A new array is made either way.
        rows = self.to_array()
        return rows if dtype is None else rows.astype(dtype, copy=False)

    def _gather(self, positions):
        # In position order, chunk by chunk: each chunk reads a narrow stretch of a shard
        # (and its pages are released after), instead of faulting in pages all over it.
        rows = np.empty((len(positions), self.shape[1]), np.float32)
        order = np.argsort(positions, kind="stable")
        chunk = max(1, _CHUNK_BYTES // max(self.shape[1] * 4, 1))
        for start in range(0, len(order), chunk):
            destinations = order[start:start + chunk]
            self._gather_sorted(positions[destinations], rows, destinations)
        return rows

    def _gather_sorted(self, ordered, out, destinations):
        """out[destinations] = the rows at positions `ordered` (sorted)."""
        block_of = np.searchsorted(self._block_starts, ordered, "right") - 1
        boundaries = np.flatnonzero(np.diff(block_of)) + 1
        for start, stop in zip(np.r_[0, boundaries], np.r_[boundaries, len(ordered)]):
            block = block_of[start]
            out[destinations[start:stop]] = self._blocks[block][ordered[start:stop]
                                                                - self._block_starts[block]]
        if self._mapped_shards:
            # Each page fault maps up to _FAULT_AROUND_BYTES of pages, not just the row's.
            self._unreleased_bytes += len(ordered) * (self.shape[1] * 4 + _FAULT_AROUND_BYTES)
            if self._unreleased_bytes > _RELEASE_BYTES:
                self.release()

    def release(self):
        """Drops the mapped shard pages read so far from this process's memory."""
        for records in self._mapped_shards:
            bottleneck_cache.release_pages(records)
        self._unreleased_bytes = 0


def available_memory_bytes():
    """Memory this process can still use: the system's available memory, or less if a
    container (cgroup) limit leaves less. None where neither can be read."""
    candidates = []
    try:
        # Bytes, not text: no codec lookup (which fails in some stripped-down environments).
        with open("/proc/meminfo", "rb") as meminfo:
            for line in meminfo:
                if line.startswith(b"MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file, "rb") as limit, open(usage_file, "rb") as usage:
                candidates.append(int(limit.read()) - int(usage.read()))
        except (OSError, ValueError):
            pass  # No such cgroup version, or "max" (no limit).
    if not candidates and hasattr(os, "sysconf"):
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    return max(min(candidates), 0) if candidates else None
