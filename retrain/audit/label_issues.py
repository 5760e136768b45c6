"""Images whose folder is probably the wrong label: confident learning on out-of-fold scores.

Each image is scored by a softmax layer that never saw it (k-fold on the cached bottlenecks),
then Northcutt et al.'s rule (Confident Learning, JAIR 2021) picks the suspects: an image is
confidently of class j when its probability of j reaches class j's threshold, the mean
probability that images labelled j get for j; an image labelled i that is confidently of
some j != i lies off the diagonal of the confident joint, and is a label issue.

The layer is trained full-batch in numpy (Nesterov's accelerated gradient on the mean
cross-entropy plus an L2 penalty), not by retrain's step loop: all k folds take about a
second for a few thousand images, where the step loop would take a minute per fold.
"""

import dataclasses

import numpy as np

# Folds of the out-of-fold scores: each image is scored by a layer trained on 4/5 of the rest.
FOLDS = 5
# The layer is trained on the features' first COMPONENTS principal components, whitened
# (each scaled to unit variance): plain gradient steps then converge in a few dozen steps
# (unwhitened, 300 were not enough), and each step's products are 20 times smaller than on
# 1280 dimensions. L2 penalty in that space, and steps: chosen on scripts/benchmark_audit.py
# (MNIST digits, 4% planted label errors; BENCHMARKS.md, "Data audit"), where 64 components
# with 3e-3 gave the best recall among the first N suspects, and confident learning flagged
# about as many images as were planted.
COMPONENTS = 64
WEIGHT_DECAY = 3e-3
STEPS = 50


@dataclasses.dataclass
class LabelIssues:
    """The suspects, most suspect first, and what found them."""

    rows: np.ndarray  # int64 [k]: rows of the features, most suspect first
    suggested: np.ndarray  # int64 [k]: the label each row is confidently of
    scores: np.ndarray  # float32 [k] in (0, 1]: out-of-fold probability the given label is wrong
    # bool [k]: off the diagonal of the confident joint (the rule's own flags; the rest are
    # images another class merely outscores)
    confident: np.ndarray
    thresholds: np.ndarray  # float32 [num_classes]: the per-class thresholds (nan if skipped)
    folds: int  # 0 when there were too few images to score out of fold
    probabilities: np.ndarray = None  # float32 [n, num_classes], out of fold (None if skipped)


def find_label_issues(features, labels, num_classes, folds=FOLDS, seed=0):
    """Scores every image out of fold and returns the confident-learning suspects.

    Args:
      features: float32 [n, D] bottlenecks.
      labels: int [n] in [0, num_classes): the folder each image is in.
      num_classes: C.
      folds: how many folds; fewer when the smallest class has fewer images than that.
      seed: for the fold assignment (fixed, so the same images give the same list).

    Returns:
      LabelIssues; empty (folds 0) when some class has fewer than 2 images or only one class
      has images, since then no layer can be trained without the image it scores.
    """
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    present = counts[counts > 0]
    folds = int(min(folds, present.min())) if len(present) else 0
    if folds < 2 or len(present) < 2:
        return _empty(num_classes)
    probabilities = out_of_fold_probabilities(features, labels, num_classes, folds, seed)
    return confident_learning(probabilities, labels, folds)


def out_of_fold_probabilities(features, labels, num_classes, folds, seed=0):
    """float32 [n, C]: each row's probabilities from a layer trained on the other folds.

    Folds are stratified: each class's images are dealt to the folds in a shuffled order, so
    every fold's training part holds every class.
    """
    features = principal_components(_standardize(np.asarray(features, np.float32)), COMPONENTS,
                                    whiten=True)
    fold_of = stratified_folds(labels, folds, seed)
    probabilities = np.zeros((len(labels), num_classes), np.float32)
    for fold in range(folds):
        held_out = fold_of == fold
        weights = train_softmax(features[~held_out], labels[~held_out], num_classes)
        probabilities[held_out] = softmax(_with_bias(features[held_out]) @ weights)
    return probabilities


def stratified_folds(labels, folds, seed=0):
    """int64 [n] fold numbers in [0, folds): each class dealt round-robin in a random order."""
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(labels), np.int64)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        # Each class starts at another fold, so small classes do not all fill fold 0 first.
        fold_of[rows] = (np.arange(len(rows)) + rng.integers(folds)) % folds
    return fold_of


def train_softmax(features, labels, num_classes, weight_decay=WEIGHT_DECAY, steps=STEPS):
    """Weights float32 [D + 1, C] (last row: biases) of a softmax layer, trained full-batch.

    Nesterov's method with step 1/L, L bounding the curvature of the mean cross-entropy
    (half the largest eigenvalue of X^T X / n, the softmax's Hessian being at most 1/2)
    plus the penalty's; the bias is not penalized.
    """
    inputs = _with_bias(features)
    targets = np.eye(num_classes, dtype=np.float32)[labels]
    lipschitz = 0.5 * _largest_eigenvalue(inputs) / len(inputs) + weight_decay
    step = 1.0 / lipschitz
    penalty = np.full((inputs.shape[1], 1), weight_decay, np.float32)
    penalty[-1] = 0.0
    weights = np.zeros((inputs.shape[1], num_classes), np.float32)
    previous = weights
    for iteration in range(steps):
        look_ahead = weights + (iteration / (iteration + 3.0)) * (weights - previous)
        gradient = inputs.T @ (softmax(inputs @ look_ahead) - targets) / len(inputs)
        gradient += penalty * look_ahead
        previous, weights = weights, look_ahead - step * gradient
    return weights


def confident_learning(probabilities, labels, folds=FOLDS):
    """The off-diagonal entries of the confident joint, most suspect first.

    Args:
      probabilities: float32 [n, C] out-of-fold probabilities.
      labels: int64 [n] given labels.

    Returns:
      LabelIssues: the images off the confident joint's diagonal, and those whose likeliest
      class is not their label, ranked by self-confidence (the probability of the given
      label, lowest first); score = 1 - self-confidence.
    """
    num_classes = probabilities.shape[1]
    thresholds = np.full(num_classes, np.nan, np.float32)
    for label in np.unique(labels):
        thresholds[label] = probabilities[labels == label, label].mean()
    # An image is confidently of the likeliest class among those whose threshold it reaches.
    above = probabilities >= np.nan_to_num(thresholds, nan=np.inf)[None, :]
    confident = np.where(above, probabilities, -1.0).argmax(axis=1)
    has_confident = above.any(axis=1)
    self_confidence = probabilities[np.arange(len(labels)), labels]
    off_diagonal = has_confident & (confident != labels)
    likeliest = probabilities.argmax(axis=1)
    # Also listed: images another class outscores, even below its threshold. Ranked by
    # self-confidence they add recall where the rule alone stops short (BENCHMARKS.md).
    suspects = np.flatnonzero(off_diagonal | (likeliest != labels))
    order = suspects[np.argsort(self_confidence[suspects], kind="stable")]
    suggested = np.where(off_diagonal[order], confident[order], likeliest[order])
    return LabelIssues(rows=order.astype(np.int64), suggested=suggested.astype(np.int64),
                       scores=(1.0 - self_confidence[order]).astype(np.float32),
                       confident=off_diagonal[order], thresholds=thresholds, folds=folds,
                       probabilities=probabilities)


def softmax(logits):
    """Row-wise softmax of float32 [n, C]."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def _standardize(features):
    """Features centered on their mean and scaled to unit mean norm, so that one weight
    decay suits every module (bottleneck scales differ by orders of magnitude)."""
    centered = features - features.mean(axis=0, keepdims=True)
    scale = np.sqrt((centered ** 2).sum(axis=1).mean()) or 1.0
    return centered / scale


def principal_components(features, count, whiten=False, seed=0):
    """float32 [n, min(count, D, n)]: centered features projected on their first principal
    components, by randomized SVD (Halko et al., 2011: two passes over the data, a few large
    matrix products, where an exact SVD would cost seconds)."""
    if features.shape[1] <= count or len(features) <= count:
        return features
    rng = np.random.default_rng(seed)
    sketch = features @ rng.standard_normal((features.shape[1], count + 16)).astype(np.float32)
    # One power iteration sharpens the sketch towards the leading components.
    sketch = features @ (features.T @ np.linalg.qr(sketch)[0])
    basis = np.linalg.qr(sketch)[0]
    _, singular, right = np.linalg.svd(basis.T @ features, full_matrices=False)
    projected = features @ right[:count].T
    if whiten:
        projected /= np.maximum(singular[:count], 1e-12) / np.sqrt(len(features))
    return projected


def _with_bias(features):
    return np.concatenate([features, np.ones((len(features), 1), np.float32)], axis=1)


def _largest_eigenvalue(inputs, iterations=20):
    """Largest eigenvalue of inputs^T inputs, by power iteration (a bound is all it needs)."""
    vector = np.random.default_rng(0).standard_normal(inputs.shape[1]).astype(np.float32)
    value = 1.0
    for _ in range(iterations):
        product = inputs.T @ (inputs @ vector)
        value = float(np.linalg.norm(product))
        vector = product / (value or 1.0)
    # Power iteration approaches from below; a margin keeps the step safely short.
    return 1.1 * value


def _empty(num_classes):
    return LabelIssues(rows=np.zeros(0, np.int64), suggested=np.zeros(0, np.int64),
                       scores=np.zeros(0, np.float32), confident=np.zeros(0, bool),
                       thresholds=np.full(num_classes, np.nan, np.float32), folds=0)
