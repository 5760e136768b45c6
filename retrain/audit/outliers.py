"""Images far from everything else in their class.

An image's distance is 1 minus the mean cosine similarity (after centering) to its
NEIGHBOURS nearest images of the same class; it is an outlier when that distance's robust
z-score within the class (distance minus the class median, over 1.4826 times the median
absolute deviation: Iglewicz and Hoaglin's modified z) is above OUTLIER_Z.
"""

import dataclasses

import numpy as np

from retrain.audit import similarity

NEIGHBOURS = 5
# Iglewicz and Hoaglin's cut for the modified z-score.
OUTLIER_Z = 3.5
# Below this many images a class has no usable median distance.
MIN_CLASS_IMAGES = 5


@dataclasses.dataclass
class Outliers:
    rows: np.ndarray  # int64 [k], most outlying first
    scores: np.ndarray  # float32 [k]: the robust z-score, above OUTLIER_Z
    distances: np.ndarray  # float32 [k]: 1 - mean similarity to the class's nearest images


def find_outliers(features, labels, content_keys, outlier_z=OUTLIER_Z, neighbours=NEIGHBOURS):
    """Outliers of each class with at least MIN_CLASS_IMAGES images.

    Args:
      features: float32 [n, D]; labels: int [n]; content_keys: [bytes] per image (identical
        files are not each other's neighbours: a photo saved twice is still alone).
    """
    labels = np.asarray(labels)
    unit = similarity.unit_rows(features)
    keys = np.array(content_keys, dtype=object)
    found_rows, found_scores, found_distances = [], [], []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) < MIN_CLASS_IMAGES:
            continue
        class_keys = keys[rows]

        def same_file(start, stop, class_keys=class_keys):
            return class_keys[start:stop, None] == class_keys[None, :]

        nearest = similarity.nearest_similarities(unit[rows], neighbours, exclude=same_file)
        # A row whose every neighbour was excluded has -inf; it is as far as can be.
        distances = 1.0 - np.maximum(nearest, -1.0).mean(axis=1)
        scores = robust_z(distances)
        flagged = scores > outlier_z
        found_rows.append(rows[flagged])
        found_scores.append(scores[flagged])
        found_distances.append(distances[flagged])
    if not found_rows:
        return Outliers(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32))
    rows, scores = np.concatenate(found_rows), np.concatenate(found_scores)
    distances = np.concatenate(found_distances)
    order = np.argsort(-scores, kind="stable")
    return Outliers(rows[order].astype(np.int64), scores[order].astype(np.float32),
                    distances[order].astype(np.float32))


def robust_z(values):
    """float32 [n]: (values - median) / (1.4826 * MAD); 0 where the MAD is 0."""
    median = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - median))
    if spread <= 0:
        return np.zeros(len(values), np.float32)
    return ((values - median) / spread).astype(np.float32)
