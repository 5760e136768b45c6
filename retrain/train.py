"""Training the new final layer: softmax regression on cached bottlenecks held in memory.

retrain.py's method: weights start from a truncated normal (stddev 0.001), biases at zero;
each step draws `train_batch_size` examples with replacement, picking a class uniformly and
then an image of that class (so small classes are oversampled), and takes one plain SGD step
on the softmax cross-entropy.
"""

import dataclasses
import datetime
import os
import struct

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2


@dataclasses.dataclass
class Head:
    """The trained layer: probabilities = softmax(features @ weights + biases)."""

    weights: np.ndarray  # float32 [feature_dim, num_classes]
    biases: np.ndarray  # float32 [num_classes]

    def probabilities(self, features):
        """float32 [num_images, num_classes] for float32 features [num_images, feature_dim]."""
        logits = features @ self.weights + self.biases
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


@dataclasses.dataclass
class TrainingSettings:
    steps: int
    batch_size: int
    learning_rate: float
    eval_step_interval: int
    validation_batch_size: int  # -1: the whole validation split at each evaluation.
    seed: int


@dataclasses.dataclass
class History:
    """One row per evaluation step, for curves and reports."""

    steps: list = dataclasses.field(default_factory=list)
    train_accuracy: list = dataclasses.field(default_factory=list)
    cross_entropy: list = dataclasses.field(default_factory=list)
    validation_accuracy: list = dataclasses.field(default_factory=list)
    validation_cross_entropy: list = dataclasses.field(default_factory=list)


class ClassBalancedSampler:
    """Draws example indices: a class uniformly at random, then one of its examples."""

    def __init__(self, labels, num_classes, rng):
        self._order = np.argsort(labels, kind="stable")
        self._counts = np.bincount(labels, minlength=num_classes)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]])
        self._present = np.flatnonzero(self._counts)
        self._rng = rng

    def sample(self, batch_size):
        classes = self._present[self._rng.integers(len(self._present), size=batch_size)]
        offsets = (self._rng.random(batch_size) * self._counts[classes]).astype(np.int64)
        return self._order[self._starts[classes] + offsets]


def train_head(train_features, train_labels, validation_features, validation_labels,
               num_classes, settings, summaries_dir=None):
    """Trains the final layer and logs retrain.py's progress lines.

    Args:
      train_features, validation_features: float32 [n, feature_dim].
      train_labels, validation_labels: int [n] class indices.
      num_classes: number of labels.
      settings: TrainingSettings.
      summaries_dir: TensorBoard folder (train/ and validation/ inside), or None.

    Returns:
      (Head, History).
    """
    # A fixed seed makes runs repeatable: same images, same flags, same model.
    rng = np.random.default_rng(settings.seed)
    model = _SoftmaxLayer(train_features, train_labels, num_classes, rng)
    train_sampler = ClassBalancedSampler(train_labels, num_classes, rng)
    validation_sampler = ClassBalancedSampler(validation_labels, num_classes, rng)
    writers = _summary_writers(summaries_dir)
    history = History()
    first_step = 0
    for eval_step in evaluation_steps(settings.steps, settings.eval_step_interval):
        # The steps up to the next evaluation run inside one TensorFlow call: a Python round
        # trip per step would cost more than the step itself.
        batches = np.stack([train_sampler.sample(settings.batch_size)
                            for _ in range(first_step, eval_step + 1)])
        train_accuracy, cross_entropy = model.train_steps(tf.constant(batches),
                                                          tf.constant(settings.learning_rate))
        first_step = eval_step + 1
        validation_accuracy, validation_cross_entropy, count = _validation_accuracy(
            model, validation_features, validation_labels, validation_sampler, settings)
        _log_step(eval_step, float(train_accuracy), float(cross_entropy), validation_accuracy, count)
        _record(history, writers, eval_step, float(train_accuracy), float(cross_entropy),
                validation_accuracy, validation_cross_entropy)
    return Head(model.weights.numpy(), model.biases.numpy()), history


class _SoftmaxLayer(tf.Module):

    def __init__(self, train_features, train_labels, num_classes, rng):
        super().__init__()
        # The training set lives in variables: passed as arguments, XLA would copy it each call.
        self.train_features = tf.Variable(train_features, trainable=False, dtype=tf.float32)
        self.train_labels = tf.Variable(train_labels, trainable=False, dtype=tf.int32)
        feature_dim = train_features.shape[1]
        initial = np.clip(rng.normal(0.0, 0.001, [feature_dim, num_classes]), -0.002, 0.002)
        self.weights = tf.Variable(initial.astype(np.float32))
        self.biases = tf.Variable(tf.zeros([num_classes]))

    def logits(self, features):
        return tf.matmul(features, self.weights) + self.biases

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64),
                                  tf.TensorSpec([], tf.float32)], jit_compile=True)
    def train_steps(self, batches, learning_rate):
        """One SGD step per row of batches (example indices [steps, batch_size]).

        Returns:
          (accuracy, cross-entropy) of the last step's batch, measured before its update.
        """
        accuracy, loss = tf.constant(0.0), tf.constant(0.0)
        for batch_indices in batches:
            accuracy, loss = self._train_step(batch_indices, learning_rate)
        return accuracy, loss

    def _train_step(self, batch_indices, learning_rate):
        features = tf.gather(self.train_features, batch_indices)
        labels = tf.gather(self.train_labels, batch_indices)
        with tf.GradientTape() as tape:
            logits = self.logits(features)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        weight_gradient, bias_gradient = tape.gradient(loss, [self.weights, self.biases])
        self.weights.assign_sub(learning_rate * weight_gradient)
        self.biases.assign_sub(learning_rate * bias_gradient)
        correct = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels)
        return tf.reduce_mean(tf.cast(correct, tf.float32)), loss


def evaluation_steps(steps, interval):
    """Steps after which retrain.py evaluates: every `interval` steps from 0, and the last."""
    if steps <= 0:
        return []
    return sorted(set(range(0, steps, interval)) | {steps - 1})


def _validation_accuracy(model, features, labels, sampler, settings):
    """Returns (accuracy, mean cross-entropy, number of examples); (None, None, 0) if none."""
    if len(labels) == 0:
        return None, None, 0
    if settings.validation_batch_size == -1:
        indices = np.arange(len(labels))
    else:
        indices = sampler.sample(settings.validation_batch_size)
    logits = model.logits(tf.constant(features[indices]))
    cross_entropy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels[indices].astype(np.int32), logits=logits))
    predictions = np.argmax(logits.numpy(), axis=1)
    return (float(np.mean(predictions == labels[indices])), float(cross_entropy), len(indices))


def _log_step(step, train_accuracy, cross_entropy, validation_accuracy, count):
    now = datetime.datetime.now()
    logging.info("%s: Step %d: Train accuracy = %.1f%%", now, step, train_accuracy * 100)
    logging.info("%s: Step %d: Cross entropy = %f", now, step, cross_entropy)
    if validation_accuracy is not None:
        logging.info("%s: Step %d: Validation accuracy = %.1f%% (N=%d)", now, step,
                     validation_accuracy * 100, count)


def _summary_writers(summaries_dir):
    if not summaries_dir:
        return None
    return {name: tf.summary.create_file_writer(f"{summaries_dir}/{name}")
            for name in ("train", "validation")}


def _record(history, writers, step, train_accuracy, cross_entropy, validation_accuracy,
            validation_cross_entropy):
    history.steps.append(step)
    history.train_accuracy.append(train_accuracy)
    history.cross_entropy.append(cross_entropy)
    history.validation_accuracy.append(validation_accuracy)
    history.validation_cross_entropy.append(validation_cross_entropy)
    if writers is None:
        return
    with writers["train"].as_default(step=step):
        write_scalar_summary("accuracy", train_accuracy)
        write_scalar_summary("cross_entropy", cross_entropy)
    if validation_accuracy is not None:
        with writers["validation"].as_default(step=step):
            write_scalar_summary("accuracy", validation_accuracy)
            write_scalar_summary("cross_entropy", validation_cross_entropy)


# What TensorBoard's scalar plugin tags its summaries with. Writing them through core
# TensorFlow keeps the tensorboard package (no longer a TensorFlow dependency) optional:
# it is needed to view the logs, not to write them.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def write_scalar_summary(tag, value):
    """Writes one scalar to the default summary writer at its default step."""
    tf.summary.write(tag, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)


# TensorBoard's image plugin reads a string tensor [width, height, encoded image...] tagged
# "images"; written through core TensorFlow for the same reason as the scalars.
_IMAGE_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"))


def write_image_summary(tag, png_bytes):
    """Writes one PNG image to the default summary writer at its default step."""
    # A PNG's IHDR chunk, right after the 8-byte signature and chunk header, starts with
    # its width and height as big-endian 32-bit integers.
    width, height = struct.unpack(">II", png_bytes[16:24])
    tensor = tf.constant([str(width).encode(), str(height).encode(), png_bytes], tf.string)
    tf.summary.write(tag, tensor, metadata=_IMAGE_METADATA)


def write_image_summaries(summaries_dir, run_name, step, pngs):
    """Writes {tag: PNG bytes} as TensorBoard images in summaries_dir/run_name at step."""
    writer = tf.summary.create_file_writer(os.path.join(summaries_dir, run_name))
    with writer.as_default(step=step):
        for tag, png_bytes in pngs.items():
            write_image_summary(tag, png_bytes)
    writer.close()
