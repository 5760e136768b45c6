"""Duplicate images: identical files, and the same picture saved again (near duplicates).

Exact: the same bytes, found by the SHA-1 that the bottleneck cache is keyed by already.
Near: bottlenecks whose cosine similarity (after centering, see similarity.unit_rows) is at
least NEAR_SIMILARITY, confirmed by the pictures themselves: their small grey thumbnails
must correlate at least PIXEL_CORRELATION. A re-encoded, resized or lightly cropped copy
passes both; two different photos of one thing pass the first at most (measured in
BENCHMARKS.md, "Data audit").
"""

import collections
import dataclasses

import numpy as np
from PIL import Image

from retrain.audit import similarity

EXACT = "exact"
NEAR = "near"
# Cosine similarity of centered bottlenecks above which two images are near-duplicate
# candidates, and the correlation of their SIGNATURE_SIZE x SIGNATURE_SIZE grey thumbnails
# that confirms one. Both high, for few false groups: on the benchmark's 28x28 MNIST digits
# (scripts/benchmark_audit.py) a re-encoded copy's bottleneck scored as low as 0.55 and
# distinct "1"s up to 0.97, with thumbnails correlating 0.98; no threshold separates those,
# and these keep false groups rare at the cost of missing such copies (BENCHMARKS.md).
NEAR_SIMILARITY = 0.85
PIXEL_CORRELATION = 0.97
SIGNATURE_SIZE = 16


@dataclasses.dataclass
class DuplicateGroup:
    rows: list  # [int]: rows of the features (images), sorted
    kind: str  # EXACT or NEAR
    similarity: float  # 1.0 for exact; for near, the lowest similarity that joined the group


def find_duplicates(content_keys, features, paths, near_similarity=NEAR_SIMILARITY,
                    pixel_correlation=PIXEL_CORRELATION):
    """Groups of identical files and groups of near-duplicate images.

    Args:
      content_keys: [bytes] per image, equal for identical files (dataset.ImageFile.content_key).
      features: float32 [n, D] bottlenecks, row i of image i.
      paths: [str] per image, to read the pictures of near-duplicate candidates.
      near_similarity, pixel_correlation: the two thresholds (module constants by default).

    Returns:
      [DuplicateGroup]: exact groups first, then near ones, each list by first row.
    """
    by_key = collections.defaultdict(list)
    for row, key in enumerate(content_keys):
        by_key[key].append(row)
    exact = [DuplicateGroup(rows, EXACT, 1.0) for rows in by_key.values() if len(rows) > 1]
    # One image per distinct file: the copies of a file have its vector and would pair up.
    representatives = np.array(sorted(rows[0] for rows in by_key.values()), np.int64)
    unit = similarity.unit_rows(np.asarray(features, np.float32)[representatives])
    rows_a, rows_b, similarities = similarity.pairs_above(unit, near_similarity)
    signatures = {}
    edges = []
    for a, b, value in zip(representatives[rows_a], representatives[rows_b], similarities):
        correlation = float(_signature(paths, a, signatures) @ _signature(paths, b, signatures))
        if correlation >= pixel_correlation:
            edges.append((int(a), int(b), float(value)))
    near = [DuplicateGroup(rows, NEAR, lowest) for rows, lowest in _connected_groups(edges)]
    return (sorted(exact, key=lambda group: group.rows[0])
            + sorted(near, key=lambda group: group.rows[0]))


def pixel_signature(path):
    """float32 [SIGNATURE_SIZE**2]: the picture as a small grey thumbnail, centered and scaled
    to length 1 (None if it cannot be read). Two copies of a picture correlate near 1 however
    they were re-encoded or resized; box filtering averages away JPEG noise and small shifts."""
    try:
        with Image.open(path) as image:
            grey = image.convert("L").resize((SIGNATURE_SIZE, SIGNATURE_SIZE), Image.BOX)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    values = np.asarray(grey, np.float32).reshape(-1)
    values -= values.mean()
    norm = np.linalg.norm(values)
    return values / norm if norm > 0 else values


def _signature(paths, row, cache):
    if row not in cache:
        signature = pixel_signature(paths[row])
        # An unreadable picture confirms nothing: a zero vector correlates 0 with anything.
        cache[row] = (signature if signature is not None
                      else np.zeros(SIGNATURE_SIZE ** 2, np.float32))
    return cache[row]


def _connected_groups(edges):
    """[(sorted rows, lowest edge similarity)] of the connected components of edges (a, b, s)."""
    parent = {}

    def root(node):
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b, _ in edges:
        parent[root(a)] = root(b)
    members = collections.defaultdict(set)
    lowest = {}
    for a, b, value in edges:
        group = root(a)
        members[group].update((a, b))
        lowest[group] = min(lowest.get(group, 1.0), value)
    return [(sorted(rows), lowest[group]) for group, rows in members.items()]
