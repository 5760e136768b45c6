"""Duplicate images: identical files, and the same picture saved again (near duplicates).

Exact: the same bytes, found by the SHA-1 that the bottleneck cache is keyed by already.
Near, three tests, any one suffices (measured in BENCHMARKS.md, "Data audit"):
- the pixels: small grey thumbnails of every picture, compared all against all, correlate at
  least SAME_PIXELS (a re-encoded copy; on 28x28 digits a JPEG copy's bottleneck can move
  further than a different digit's, but its thumbnail correlates 0.999);
- the bottlenecks, relative to their neighbourhood: two images that are each other's nearest
  neighbour, whose cosine distance is at most DISTANCE_RATIO times the distance to each one's
  NEIGHBOUR_RANK-th neighbour (the similarity stands out from the local density: a copy
  among look-alikes, where an absolute threshold flags all look-alikes), confirmed by the
  pixels once small crops are aligned (ALIGNED_CORRELATION, best over crops of up to
  CROP_STEPS thumbnail pixels a side of either picture: a lightly cropped copy);
- mutual nearest neighbours by bottleneck (any distance ratio) whose pixels, compared at the
  smaller picture's own resolution (at most MATCHED_SIZE), correlate at least
  MATCHED_CORRELATION (a resized copy: at 16x16 a 28-pixel digit resized 1.5x correlates
  0.95-0.98 with its original, as distinct "1"s do; at 28x28 it still correlates 0.96-0.99
  while distinct neighbours' fine strokes differ).
"""

import collections
import dataclasses

import numpy as np
from PIL import Image

from retrain.audit import similarity

EXACT = "exact"
NEAR = "near"
SIGNATURE_SIZE = 16
# Thumbnails are read at twice the signature size, so crops can be aligned a pixel at a time.
THUMBNAIL_SIZE = 2 * SIGNATURE_SIZE
# Chosen on scripts/benchmark_audit.py's planted MNIST digits and checked on its photo-tile
# set (BENCHMARKS.md, "Data audit"): distinct digits correlated up to 0.99, re-encoded copies
# 0.999 and more.
SAME_PIXELS = 0.995
NEIGHBOUR_RANK = 5
DISTANCE_RATIO = 0.4
ALIGNED_CORRELATION = 0.95
CROP_STEPS = 3
MATCHED_CORRELATION = 0.975
MATCHED_SIZE = 64
# Only pairs whose thumbnails already correlate this much are read again (resized copies
# measured 0.95-0.98): most mutual neighbours are distinct pictures, and reading costs.
THUMBNAIL_FOR_MATCHED = 0.93


@dataclasses.dataclass
class DuplicateGroup:
    rows: list  # [int]: rows of the features (images), sorted
    kind: str  # EXACT or NEAR
    similarity: float  # 1.0 for exact; for near, the lowest similarity that joined the group


def find_duplicates(content_keys, features, paths, same_pixels=SAME_PIXELS,
                    distance_ratio=DISTANCE_RATIO, aligned_correlation=ALIGNED_CORRELATION,
                    matched_correlation=MATCHED_CORRELATION):
    """Groups of identical files and groups of near-duplicate images.

    Args:
      content_keys: [bytes] per image, equal for identical files (dataset.ImageFile.content_key).
      features: float32 [n, D] bottlenecks, row i of image i.
      paths: [str] per image: every distinct file's picture is read once, as a thumbnail.
      same_pixels, distance_ratio, aligned_correlation, matched_correlation: the thresholds
        (module constants).

    Returns:
      [DuplicateGroup]: exact groups first, then near ones, each list by first row; a near
      group's similarity is the lowest bottleneck cosine similarity of its pairs.
    """
    by_key = collections.defaultdict(list)
    for row, key in enumerate(content_keys):
        by_key[key].append(row)
    exact = [DuplicateGroup(rows, EXACT, 1.0) for rows in by_key.values() if len(rows) > 1]
    # One image per distinct file: the copies of a file have its vector and would pair up.
    representatives = np.array(sorted(rows[0] for rows in by_key.values()), np.int64)
    unit = similarity.unit_rows(np.asarray(features, np.float32)[representatives])
    thumbnails = np.stack([_thumbnail(paths[row]) for row in representatives])
    signatures = _signatures(thumbnails)
    pairs = set(zip(*similarity.pairs_above(signatures, same_pixels)[:2]))
    for a, b, ratio in mutual_neighbours(unit):
        if ratio <= distance_ratio and aligned(thumbnails, signatures, a, b) >= aligned_correlation:
            pairs.add((a, b))
        elif (signatures[a] @ signatures[b] >= THUMBNAIL_FOR_MATCHED
              and matched(paths[representatives[a]], paths[representatives[b]])
              >= matched_correlation):
            pairs.add((a, b))
    edges = [(int(representatives[a]), int(representatives[b]), float(unit[a] @ unit[b]))
             for a, b in sorted(pairs)]
    near = [DuplicateGroup(rows, NEAR, lowest) for rows, lowest in _connected_groups(edges)]
    return (sorted(exact, key=lambda group: group.rows[0])
            + sorted(near, key=lambda group: group.rows[0]))


def mutual_neighbours(unit, rank=NEIGHBOUR_RANK):
    """[(a, b, ratio)], a < b: rows that are each other's nearest neighbour, with their cosine
    distance divided by the larger of their distances to their rank-th neighbours (at most 1:
    how much the pair stands out from its neighbourhood, smaller is more)."""
    if len(unit) <= rank:
        return []
    nearest, similarities = similarity.nearest_neighbours(unit, rank)
    pairs = []
    for a, b in enumerate(nearest[:, 0]):
        if a < b and nearest[b, 0] == a:
            local = 1.0 - max(similarities[a, rank - 1], similarities[b, rank - 1])
            ratio = (1.0 - similarities[a, 0]) / max(local, 1e-12)
            pairs.append((a, int(b), float(ratio)))
    return pairs


def matched(path_a, path_b, size=MATCHED_SIZE):
    """The correlation of two pictures' grey pixels, both box-resized to the smaller one's
    width and height (each at most size): a resized copy is compared at the resolution it
    was saved at, where a 16x16 thumbnail blurs away what tells look-alikes apart. -1.0 when
    either cannot be read."""
    try:
        with Image.open(path_a) as image_a, Image.open(path_b) as image_b:
            width = min(image_a.width, image_b.width, size)
            height = min(image_a.height, image_b.height, size)
            pixels = []
            for image in (image_a, image_b):
                image.draft("L", (width, height))  # JPEGs decode at the size needed, no less
                grey = image.convert("L").resize((width, height), Image.BOX)
                pixels.append(np.asarray(grey, np.float32).ravel())
    except (OSError, ValueError, Image.DecompressionBombError):
        return -1.0
    centered = [values - values.mean() for values in pixels]
    norms = np.linalg.norm(centered[0]) * np.linalg.norm(centered[1])
    return float(centered[0] @ centered[1] / norms) if norms > 0 else -1.0


def aligned(thumbnails, signatures, a, b, steps=CROP_STEPS):
    """The best correlation of one picture's signature with the other's thumbnail cropped by
    0..steps pixels a side (either way round): a lightly cropped copy lines up again."""
    size = thumbnails.shape[1]
    shrink = _crop_matrices(size, steps)  # [m, SIGNATURE_SIZE, size]
    best = -1.0
    for cropped, other in ((a, b), (b, a)):
        # Every crop box at once: rows shrunk by one matrix, columns by another.
        rows_done = np.einsum("isp,pq->isq", shrink, thumbnails[cropped].astype(np.float32))
        crops = np.einsum("isq,jtq->ijst", rows_done, shrink)
        crops = crops.reshape(-1, SIGNATURE_SIZE, SIGNATURE_SIZE)
        best = max(best, float((_signatures(crops) @ signatures[other]).max()))
    return best


def _crop_matrices(size, steps):
    """float32 [(steps + 1)**2, SIGNATURE_SIZE, size]: for each (first, last) margin, the
    matrix that box-averages pixels first..size-last-1 of a line into SIGNATURE_SIZE bins."""
    matrices = []
    edges = np.arange(size + 1, dtype=np.float64)
    for first in range(steps + 1):
        for last in range(steps + 1):
            bins = np.linspace(first, size - last, SIGNATURE_SIZE + 1)
            # Overlap of each bin [bins[k], bins[k+1]) with each pixel [p, p + 1).
            overlap = (np.minimum(bins[1:, None], edges[None, 1:])
                       - np.maximum(bins[:-1, None], edges[None, :-1])).clip(min=0)
            matrices.append(overlap / overlap.sum(axis=1, keepdims=True))
    return np.array(matrices, np.float32)


def pixel_signature(path):
    """float32 [SIGNATURE_SIZE**2]: the picture as a small grey thumbnail, centered and scaled
    to length 1 (zeros if it cannot be read: it then correlates with nothing). Copies of a
    picture correlate near 1 however they were re-encoded; box filtering averages away JPEG
    noise."""
    thumbnail = Image.fromarray(_thumbnail(path))
    small = thumbnail.resize((SIGNATURE_SIZE, SIGNATURE_SIZE), Image.BOX)
    return _signatures(np.asarray(small, np.float32)[None])[0]


def _thumbnail(path):
    """uint8 [THUMBNAIL_SIZE, THUMBNAIL_SIZE] grey picture (all zero if unreadable)."""
    try:
        with Image.open(path) as image:
            # JPEGs decode at a fraction of their size: a thumbnail needs no more.
            image.draft("L", (THUMBNAIL_SIZE * 2, THUMBNAIL_SIZE * 2))
            grey = image.convert("L").resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.BOX)
            return np.asarray(grey, np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError):
        return np.zeros((THUMBNAIL_SIZE, THUMBNAIL_SIZE), np.uint8)


def _signatures(pictures):
    """float32 [n, S*S]: each picture (uint8 or float [n, S, S]) resized to SIGNATURE_SIZE if
    needed, flattened, centered and scaled to length 1 (a flat picture stays all zero)."""
    pictures = np.asarray(pictures, np.float32)
    if pictures.shape[1] != SIGNATURE_SIZE:
        factor = pictures.shape[1] // SIGNATURE_SIZE
        pictures = pictures.reshape(len(pictures), SIGNATURE_SIZE, factor, SIGNATURE_SIZE,
                                    factor).mean(axis=(2, 4))
    values = pictures.reshape(len(pictures), -1)
    values = values - values.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return np.where(norms > 0, values / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


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
