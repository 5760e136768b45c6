"""Which training examples each step sees (--class_balance), and how much each one counts.

Every draw comes from a generator seeded with (seed, step), never from one long stream: a
run resumed from a checkpoint at some step then draws exactly the batches that an
uninterrupted run draws from that step on.
"""

import numpy as np

from retrain.errors import UserError

# --class_balance choices.
CLASSES = "classes"  # retrain.py: a class uniformly, then one of its images
IMAGES = "images"  # every training image equally often
LOSS_WEIGHT = "loss_weight"  # images uniformly, loss weighted by inverse class frequency
CLASS_BALANCE_MODES = (CLASSES, IMAGES, LOSS_WEIGHT)

# Streams of draws that must not overlap for the same step.
TRAINING_STREAM = 0
VALIDATION_STREAM = 1


def check_class_balance(mode):
    """Raises UserError unless mode is one of CLASS_BALANCE_MODES."""
    if mode not in CLASS_BALANCE_MODES:
        raise UserError(f"--class_balance={mode!r} is not a choice; use one of "
                        f"{', '.join(CLASS_BALANCE_MODES)}.")


def generator_for_step(seed, step, stream=TRAINING_STREAM):
    """A numpy Generator whose draws depend only on (seed, step, stream); seed, step >= 0."""
    return np.random.default_rng([seed, step, stream])


class ClassBalancedSampler:
    """Draws example indices: a class uniformly at random, then one of its examples."""

    def __init__(self, labels, num_classes):
        self._order = np.argsort(labels, kind="stable")
        self._counts = np.bincount(labels, minlength=num_classes)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]])
        self._present = np.flatnonzero(self._counts)

    def sample(self, rng, batch_size):
        """int64 [batch_size] indices into labels, drawn with replacement."""
        classes = self._present[rng.integers(len(self._present), size=batch_size)]
        offsets = (rng.random(batch_size) * self._counts[classes]).astype(np.int64)
        return self._order[self._starts[classes] + offsets]


class UniformSampler:
    """Draws example indices uniformly: large classes are seen as often as they occur."""

    def __init__(self, labels):
        self._count = len(labels)

    def sample(self, rng, batch_size):
        """int64 [batch_size] indices into labels, drawn with replacement."""
        return rng.integers(self._count, size=batch_size, dtype=np.int64)


def training_sampler(mode, labels, num_classes):
    """The sampler that --class_balance=mode trains with."""
    check_class_balance(mode)
    if mode == CLASSES:
        return ClassBalancedSampler(labels, num_classes)
    return UniformSampler(labels)


def class_loss_weights(mode, labels, num_classes):
    """float32 [num_classes]: the factor on each class's examples' cross-entropy.

    All ones, except for loss_weight: n / (classes present * n_class), the inverse class
    frequency scaled so that the weights average exactly 1 over the training examples (the
    loss keeps its scale, so the learning rate means the same in every mode). Classes with
    no training example get weight 0 (they are never drawn).
    """
    check_class_balance(mode)
    if mode != LOSS_WEIGHT:
        return np.ones(num_classes, np.float32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = np.count_nonzero(counts)
    weights = np.divide(len(labels), present * counts, out=np.zeros_like(counts),
                        where=counts > 0)
    return weights.astype(np.float32)
