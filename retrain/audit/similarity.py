"""Cosine similarities of bottlenecks, computed a block of rows at a time.

The whole n x n matrix of 20,000 images would take 1.6 GB; blocks of 1,024 rows take
a few tens of MB at once, and the matrix products run at the same speed.
"""

import numpy as np

BLOCK_ROWS = 1024


def unit_rows(features):
    """float32 [n, D]: features centered on their mean, each row scaled to length 1.

    Centering matters: bottlenecks are ReLU outputs, all >= 0, so raw cosines of unrelated
    images are high; after centering, two images are similar only in what sets them apart.
    """
    features = np.asarray(features, np.float32)
    centered = features - features.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centered, axis=1, keepdims=True)
    return centered / np.maximum(norms, 1e-12)


def pairs_above(unit, threshold, block_rows=BLOCK_ROWS):
    """(rows_a int64 [k], rows_b int64 [k], similarities float32 [k]) of every pair a < b of
    unit's rows whose cosine similarity is at least threshold."""
    found_a, found_b, found_similarity = [], [], []
    for start in range(0, len(unit), block_rows):
        block = unit[start:start + block_rows] @ unit[start:].T
        # Only pairs to the right of the diagonal: each pair once, no row with itself.
        block = np.triu(block, k=1)
        rows, columns = np.nonzero(block >= threshold)
        found_a.append(rows + start)
        found_b.append(columns + start)
        found_similarity.append(block[rows, columns])
    if not found_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (np.concatenate(found_a).astype(np.int64), np.concatenate(found_b).astype(np.int64),
            np.concatenate(found_similarity).astype(np.float32))


def nearest_similarities(unit, count, exclude=None, block_rows=BLOCK_ROWS):
    """float32 [n, count]: each row's `count` highest similarities to the other rows, highest
    first. exclude: bool [n, n]-like callable(start, stop) -> bool [stop - start, n] of pairs
    to leave out (None: only each row with itself)."""
    count = min(count, len(unit) - 1)
    result = np.zeros((len(unit), max(count, 0)), np.float32)
    if count <= 0:
        return result
    for start in range(0, len(unit), block_rows):
        stop = min(start + block_rows, len(unit))
        block = unit[start:stop] @ unit.T
        block[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        if exclude is not None:
            block[exclude(start, stop)] = -np.inf
        top = -np.partition(-block, count - 1, axis=1)[:, :count]
        result[start:stop] = -np.sort(-top, axis=1)
    return result


def nearest_neighbours(unit, count, block_rows=BLOCK_ROWS):
    """(rows int64 [n, count], similarities float32 [n, count]): each row's `count` most
    similar other rows, most similar first."""
    count = min(count, len(unit) - 1)
    rows = np.zeros((len(unit), count), np.int64)
    values = np.zeros((len(unit), count), np.float32)
    for start in range(0, len(unit), block_rows):
        stop = min(start + block_rows, len(unit))
        block = unit[start:stop] @ unit.T
        block[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        top = np.argpartition(-block, count - 1, axis=1)[:, :count]
        top_values = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_values, axis=1, kind="stable")
        rows[start:stop] = np.take_along_axis(top, order, axis=1)
        values[start:stop] = np.take_along_axis(top_values, order, axis=1)
    return rows, values
