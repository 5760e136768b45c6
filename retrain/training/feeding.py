"""How training and validation examples reach the head's compiled steps (retrain.training.train).

In memory: a numpy array up to IN_MEMORY_LIMIT_BYTES goes into a tf.Variable once, and the
compiled steps gather each batch from it themselves (no copy per call). Streamed: a
np.memmap, any other row store, or a larger array stays where it is; each evaluation
interval's rows are read in numpy, in ascending order and each once, and passed to the
compiled steps, so memory stays at about interval steps * batch size * feature_dim floats.
Both paths draw the same indices and run the same arithmetic.

A row store is anything with .shape == (n, feature_dim), len() and
store[int64 indices] -> float32 [k, feature_dim].
"""

import numpy as np
import tensorflow as tf

from retrain.training import sampling

# Larger in-memory training sets are streamed instead of copied into a tf.Variable (the copy
# would double their memory).
IN_MEMORY_LIMIT_BYTES = 2 << 30
# Validation examples per forward pass when validating from a row store.
VALIDATION_CHUNK_ROWS = 8192


def is_in_memory(features):
    """Whether features go into a tf.Variable (else they are streamed batch by batch)."""
    return (type(features) is np.ndarray  # pylint: disable=unidiomatic-typecheck
            and features.nbytes <= IN_MEMORY_LIMIT_BYTES)


def make_feed(model, features, labels):
    """The feed for float32 features [n, feature_dim] and int32 labels [n] (see above)."""
    if is_in_memory(features):
        return VariableFeed(model, features, labels)
    return StreamingFeed(model, features, labels)


class VariableFeed:
    """The training set in tf.Variables: XLA gathers each step's batch itself."""

    def __init__(self, model, features, labels):
        self.model, self.labels = model, labels
        model.hold_training_set(features, labels)

    def train_steps(self, batches, learning_rate, momentum):
        return self.model.train_steps(tf.constant(batches), learning_rate, momentum)


class StreamingFeed:
    """The training set stays in its store; each interval's rows are read in sorted order."""

    def __init__(self, model, features, labels):
        self.model, self.features, self.labels = model, features, labels

    def train_steps(self, batches, learning_rate, momentum):
        features = gather_rows(self.features, batches)
        return self.model.train_steps_on(tf.constant(features), tf.constant(self.labels[batches]),
                                         learning_rate, momentum)


def gather_rows(store, indices):
    """float32 [*indices.shape, feature_dim]: store's rows at int64 indices, each read once
    and in ascending order (sequential reads for a memory-mapped file)."""
    unique, inverse = np.unique(indices, return_inverse=True)
    rows = np.asarray(store[unique], dtype=np.float32)
    return rows[inverse.reshape(indices.shape)]


class Validation:
    """The validation split and how each evaluation step draws from it.

    Validation draws a class uniformly, then an image, whatever --class_balance is, so that
    validation accuracies stay comparable between runs with different settings.
    """

    def __init__(self, features, labels, num_classes, settings):
        self.features, self.labels = features, labels
        self.sampler = sampling.ClassBalancedSampler(labels, num_classes)
        self.batch_size, self.seed = settings.validation_batch_size, settings.seed

    def evaluate(self, model, step):
        """(accuracy, mean cross-entropy, number of examples); (None, None, 0) if none.

        Accuracy and cross-entropy are float64 [K], one per candidate of the model
        (train._SoftmaxLayer).
        """
        if len(self.labels) == 0:
            return None, None, 0
        if self.batch_size == -1:
            indices = np.arange(len(self.labels))
        else:
            rng = sampling.generator_for_step(self.seed, step, sampling.VALIDATION_STREAM)
            indices = np.sort(self.sampler.sample(rng, self.batch_size))
        correct, cross_entropy = 0, 0.0
        for start in range(0, len(indices), VALIDATION_CHUNK_ROWS):
            chunk = indices[start:start + VALIDATION_CHUNK_ROWS]
            chunk_correct, chunk_cross_entropy = model.evaluate(
                tf.constant(self._rows(chunk)), tf.constant(self.labels[chunk]))
            correct = correct + chunk_correct.numpy().astype(np.int64)
            cross_entropy = cross_entropy + chunk_cross_entropy.numpy().astype(np.float64)
        return correct / len(indices), cross_entropy / len(indices), len(indices)

    def _rows(self, indices):
        """float32 [len(indices), feature_dim] for sorted indices."""
        if self.batch_size == -1 and isinstance(self.features, np.ndarray):
            # The whole split goes by in runs of consecutive rows: a view, no copy, no sort.
            return self.features[indices[0]:indices[-1] + 1]
        return gather_rows(self.features, indices)
