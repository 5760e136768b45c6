"""The "unknown" score: how far an image is from the training images, and its threshold.

Candidates (each higher = farther from what the model was trained on):

  knn          1 - cosine similarity to the k-th nearest of the (L2-normalised) training
               bottlenecks (Sun et al., 2022, "Out-of-distribution detection with deep nearest
               neighbors"); the export carries a sample of them (KnnBank).
  mahalanobis  the smallest Mahalanobis distance to a class mean, with one covariance shared
               by the classes (Lee et al., 2018); the export carries the means and the inverse.
  max_logit    minus the largest logit (Hendrycks et al., 2022); nothing to carry.
  energy       minus logsumexp of the logits (Liu et al., 2020); nothing to carry.
  msp          1 - the largest (calibrated) probability (Hendrycks and Gimpel, 2017).

scripts/benchmark_trust.py measures them on held-out classes (BENCHMARKS.md#trust); the
export uses DEFAULT_METHOD. The threshold is a quantile of the validation split's scores, so a
stated share of known images stays known (choose_threshold).
"""

import dataclasses
import math
from typing import Optional

import numpy as np

from retrain.errors import UserError

METHODS = ("knn", "mahalanobis", "max_logit", "energy", "msp")
DEFAULT_METHOD = "max_logit"
# Rows compared at once in knn_scores: [rows, bank] float32 similarities stay near 16 MB.
_ROWS_PER_CHUNK = 4096


@dataclasses.dataclass
class UnknownDetector:
    """What the export needs to compute unknown_score and to call an image unknown.

    bank: knn: float32 [N, D] unit-length training bottlenecks; mahalanobis: float32 [C, D]
      class means; None for the logit-based methods.
    precision_matrix: mahalanobis only: float32 [D, D], the inverse shared covariance.
    """

    method: str
    threshold: float  # unknown when unknown_score > threshold
    known_share: float  # the share of validation images the threshold keeps known
    k: int = 1
    bank: Optional[np.ndarray] = None
    precision_matrix: Optional[np.ndarray] = None
    temperature: float = 1.0  # msp's probabilities are the calibrated ones

    def score(self, features, logit_rows):
        """float32 [n]: the unknown score of each image (features [n, D], logits [n, C])."""
        return score(self.method, features, logit_rows, k=self.k, bank=self.bank,
                     precision_matrix=self.precision_matrix, temperature=self.temperature)

    def describe(self):
        """A JSON-ready dict of the settings (no arrays), for metrics.json and the sidecar."""
        return {"method": self.method, "threshold": self.threshold,
                "known_share": self.known_share, "k": self.k,
                "bank_size": 0 if self.bank is None else int(len(self.bank))}


def check_settings(known_share, method, neighbors, bank_size):
    """Raises UserError for unknown-detector settings that cannot work; no TensorFlow, so
    preflight can check them before the slow import."""
    if not 0.0 < known_share <= 1.0:
        raise UserError(f"--unknown_known_share={known_share} is not in (0, 1]; pass the "
                        "share of known images to keep known, e.g. 0.95.")
    if method not in METHODS:
        raise UserError(f"--unknown_method={method!r} is not one of {', '.join(METHODS)}; "
                        "pass one of them.")
    if neighbors < 1 or bank_size < 1:
        raise UserError(f"--unknown_neighbors={neighbors} and --unknown_bank_size={bank_size} "
                        "must be at least 1; pass positive numbers.")


def unit_rows(features):
    """float32 [n, D]: each row divided by its L2 norm (zero rows stay zero)."""
    features = np.asarray(features, np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def sample_bank(labels, size, seed=0):
    """Row indices of a class-stratified random sample of at most `size` training vectors.

    Each class keeps about its share of `size` (at least one row), so a small class is not
    left out of the bank. Returns sorted int64 indices.
    """
    labels = np.asarray(labels)
    if size is None or size <= 0 or len(labels) <= size:
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        keep = max(1, int(round(size * len(rows) / len(labels))))
        chosen.append(rng.choice(rows, min(keep, len(rows)), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def knn_scores(features, bank, k):
    """float32 [n]: 1 - cosine similarity to the k-th nearest bank row (bank: unit rows)."""
    queries = unit_rows(features)
    k = min(k, len(bank))
    scores = np.empty(len(queries), np.float32)
    for start in range(0, len(queries), _ROWS_PER_CHUNK):
        similarities = queries[start:start + _ROWS_PER_CHUNK] @ bank.T
        kth = -np.partition(-similarities, k - 1, axis=1)[:, k - 1]
        scores[start:start + _ROWS_PER_CHUNK] = 1.0 - kth
    return scores


def fit_mahalanobis(features, labels, num_classes, shrinkage=1e-3):
    """(class means float32 [C, D], inverse shared covariance float32 [D, D]).

    The covariance of the features around their class means, shrunk toward its mean variance
    (a few hundred images do not pin down D x D numbers; without it the inverse explodes).
    """
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    means = np.stack([features[labels == c].mean(axis=0) if np.any(labels == c)
                      else np.zeros(features.shape[1]) for c in range(num_classes)])
    centred = features - means[labels]
    covariance = centred.T @ centred / max(len(features) - 1, 1)
    scale = np.trace(covariance) / len(covariance)
    covariance = (1 - shrinkage) * covariance + shrinkage * scale * np.eye(len(covariance))
    return means.astype(np.float32), np.linalg.inv(covariance).astype(np.float32)


def mahalanobis_scores(features, means, precision_matrix):
    """float32 [n]: the smallest squared Mahalanobis distance to a class mean."""
    features = np.asarray(features, np.float32)
    # (f - m)^T P (f - m) = f^T P f - 2 f^T P m + m^T P m, for all classes at once.
    projected = features @ precision_matrix
    own = np.sum(projected * features, axis=1, keepdims=True)
    cross = projected @ means.T
    mean_terms = np.sum((means @ precision_matrix) * means, axis=1)
    return np.min(own - 2 * cross + mean_terms, axis=1).astype(np.float32)


def score(method, features, logit_rows, k=1, bank=None, precision_matrix=None, temperature=1.0):
    """float32 [n]: method's unknown score (see the module docstring)."""
    logit_rows = np.asarray(logit_rows, np.float64)
    if method == "knn":
        return knn_scores(features, bank, k)
    if method == "mahalanobis":
        return mahalanobis_scores(features, bank, precision_matrix)
    if method == "max_logit":
        return (-logit_rows.max(axis=1)).astype(np.float32)
    if method == "energy":
        top = logit_rows.max(axis=1, keepdims=True)
        return (-(top[:, 0] + np.log(np.exp(logit_rows - top).sum(axis=1)))).astype(np.float32)
    if method == "msp":
        scaled = logit_rows / temperature
        scaled -= scaled.max(axis=1, keepdims=True)
        probabilities = np.exp(scaled) / np.exp(scaled).sum(axis=1, keepdims=True)
        return (1.0 - probabilities.max(axis=1)).astype(np.float32)
    raise ValueError(f"Unknown method {method!r}; one of {METHODS}.")


def choose_threshold(validation_scores, known_share):
    """The smallest threshold t with at least known_share of validation_scores <= t.

    An image is unknown when its score > t, so at least ceil(known_share * n) of the n
    validation images stay known (more if scores tie at t). inf without validation images
    (nothing is ever called unknown).
    """
    ordered = np.sort(np.asarray(validation_scores, np.float64))
    if len(ordered) == 0:
        return math.inf
    keep = min(len(ordered), max(1, math.ceil(known_share * len(ordered) - 1e-9)))
    return float(ordered[keep - 1])


def fit_detector(method, training_features, training_labels, validation_features,
                 validation_logits, num_classes, known_share, k=1, bank_size=None, seed=0,
                 temperature=1.0):
    """An UnknownDetector fitted on the training split, its threshold on the validation split.

    Args:
      training_features: float32 [n, D] (an array or row_store.RowStore); training_labels:
        int [n]. validation_features float32 [m, D], validation_logits float [m, C]: of the
        network that is exported (fine-tuned, if it was).
      bank_size: knn: training vectors kept (a class-stratified sample); None: all.
    """
    bank = precision_matrix = None
    if method == "knn":
        rows = sample_bank(training_labels, bank_size, seed)
        bank = unit_rows(_rows_of(training_features, rows))
    elif method == "mahalanobis":
        bank, precision_matrix = fit_mahalanobis(np.asarray(training_features), training_labels,
                                                 num_classes)
    detector = UnknownDetector(method, math.inf, known_share, k=k, bank=bank,
                               precision_matrix=precision_matrix, temperature=temperature)
    detector.threshold = choose_threshold(detector.score(validation_features, validation_logits),
                                          known_share)
    return detector


def _rows_of(features, rows):
    """float32 [len(rows), D] from an array or a row_store.RowStore (read only those rows)."""
    return np.asarray(features[rows], np.float32)


def auroc(known_scores, unknown_scores):
    """Area under the ROC curve of telling unknown (positive) from known by a higher score:
    the probability that a random unknown image scores above a random known one (ties: 1/2)."""
    known = np.asarray(known_scores, np.float64)
    unknown = np.asarray(unknown_scores, np.float64)
    if len(known) == 0 or len(unknown) == 0:
        return float("nan")
    everything = np.concatenate([known, unknown])
    order = np.argsort(everything, kind="mergesort")
    ranks = np.empty(len(everything))
    ranks[order] = np.arange(1, len(everything) + 1)
    # Ties get their average rank.
    sorted_values = everything[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(sorted_values)]
    for start, end in zip(starts, ends):
        if end - start > 1:
            ranks[order[start:end]] = (start + end + 1) / 2.0
    unknown_rank_sum = ranks[len(known):].sum()
    return float((unknown_rank_sum - len(unknown) * (len(unknown) + 1) / 2)
                 / (len(known) * len(unknown)))
