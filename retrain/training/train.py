"""Training the new final layer: softmax regression on cached bottlenecks.

retrain.py's method: weights start from a truncated normal (stddev 0.001), biases at zero;
each step draws `train_batch_size` examples with replacement and takes one SGD step on the
softmax cross-entropy. Changed: the step uses momentum (0.9 by default; 0 gives retrain.py's
plain SGD), which reaches what a fully converged linear classifier reaches within the same
4000 steps (on the MNIST example: 95.4% against scikit-learn's LogisticRegression 95.8%,
where plain SGD stopped at 93.3%). Which examples a step draws, and how much each counts,
is --class_balance (retrain.training.sampling); the state can be checkpointed and resumed
(retrain.training.checkpoint).

Regularization (issue 24): the targets are smoothed (--label_smoothing: the true class gets
1 - s + s/C, every other s/C), and the weights pay an L2 penalty, weight_decay / 2 * |W|^2
on top of the mean cross-entropy (biases are free, as in scikit-learn's LogisticRegression).
With --weight_decay=auto the layer is trained once per candidate in WEIGHT_DECAY_CANDIDATES,
all at once: weights [D, K, C], the same batches, one matmul of each batch with the [D, K*C]
view, one XLA-compiled step, so the search costs about 1.5x a single layer instead of Kx. The
candidate with the lowest cross-entropy on the whole validation split is kept; a Step line
shows the candidate with the lowest cross-entropy on that evaluation's validation sample.

The training set can be an in-memory array or a row store streamed from disk
(retrain.training.feeding).
"""

import dataclasses
import datetime
import hashlib
import os
import struct
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from retrain.errors import UserError
from retrain.runtime import progress as progress_lib
from retrain.training import checkpoint
from retrain.training import feeding
from retrain.training import sampling

# Every evaluation's Step lines, in the output folder (TrainingSettings.log_file).
TRAINING_LOG_FILE = "training_log.txt"


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
    seed: int  # >= 0
    momentum: float = 0.9  # 0: retrain.py's plain SGD.
    class_balance: str = sampling.CLASSES  # one of sampling.CLASS_BALANCE_MODES
    # L2 on the weights (see the module docstring); None: chosen on the validation split from
    # WEIGHT_DECAY_CANDIDATES. 0 here, and no smoothing, is retrain.py's objective; a run's
    # defaults are RetrainConfig's.
    weight_decay: Optional[float] = 0.0
    label_smoothing: float = 0.0  # in [0, 1): the weight spread evenly over all classes
    # Where every evaluation's Step lines go, written as the run goes; None: nowhere.
    log_file: Optional[str] = None
    # The Step lines on the console too; otherwise it gets a line per tenth of the run.
    verbose: bool = False


@dataclasses.dataclass
class History:
    """One row per evaluation step, for curves and reports."""

    steps: list = dataclasses.field(default_factory=list)
    train_accuracy: list = dataclasses.field(default_factory=list)
    cross_entropy: list = dataclasses.field(default_factory=list)
    validation_accuracy: list = dataclasses.field(default_factory=list)
    validation_cross_entropy: list = dataclasses.field(default_factory=list)
    # After training: the weight decay kept and how (see train_head's Returns); None before.
    regularization: Optional[dict] = None


# --weight_decay=auto's candidates, trained side by side. On the four reference sets of
# BENCHMARKS.md ("The new layer against logistic regression") the validation split chose 0 or
# 1e-4 almost always once labels are smoothed; 1e-3 and 1e-2 are there for small sets, where
# an unpenalised layer fits its training images exactly. Four, not eight: each candidate adds
# about a sixth of a single layer's training time (eight cost 2.1-2.4x one).
WEIGHT_DECAY_CANDIDATES = (0.0, 1e-4, 1e-3, 1e-2)


def weight_decay_candidates(settings):
    """The weight decays train_head trains side by side: the one given, or the candidates."""
    if settings.weight_decay is None:
        return WEIGHT_DECAY_CANDIDATES
    return (float(settings.weight_decay),)


def train_head(train_features, train_labels, validation_features, validation_labels,
               num_classes, settings, summaries_dir=None, checkpoint_settings=None):
    """Trains the final layer; writes retrain.py's Step lines to settings.log_file (and the
    console if settings.verbose), and a progress line per tenth of the run to the console.

    Args:
      train_features, validation_features: float32 [n, feature_dim]: a numpy array, a
        np.memmap, or any row store with .shape, len() and store[int64 indices] -> float32
        [k, feature_dim] (rows are read in sorted order).
      train_labels, validation_labels: int [n] class indices in [0, num_classes).
      num_classes: number of labels.
      settings: TrainingSettings.
      summaries_dir: TensorBoard folder (train/ and validation/ inside), or None.
      checkpoint_settings: checkpoint.CheckpointSettings, or None for no checkpoints.

    Returns:
      (Head, History). History.regularization: {"weight_decay": the one kept,
      "label_smoothing", "chosen_by": "validation cross-entropy", "--weight_decay" (one
      candidate) or "no validation images" (the first candidate), "validation_count",
      "candidates": [{"weight_decay", "validation_accuracy", "validation_cross_entropy"}]}.

    Raises:
      checkpoint.Interrupted: Ctrl-C, after the state was saved (with checkpoint_settings).
      UserError: --resume with a checkpoint of another run.
    """
    train_labels = np.asarray(train_labels, np.int32)
    fingerprint = training_fingerprint(train_features, train_labels, num_classes, settings)
    candidates = weight_decay_candidates(settings)
    model = _SoftmaxLayer(
        _initial_weights(train_features.shape[1], num_classes, settings.seed),
        sampling.class_loss_weights(settings.class_balance, train_labels, num_classes),
        candidates, settings.label_smoothing)
    saver, history, start_step = _resume_or_start(checkpoint_settings, fingerprint, model,
                                                  settings.steps)
    validation = feeding.Validation(validation_features, np.asarray(validation_labels, np.int32),
                                    num_classes, settings)
    feed = feeding.make_feed(model, train_features, train_labels)
    # Appended to on --resume: the steps before the interruption are logged already.
    progress = progress_lib.TrainingProgress("Training", settings.steps, start_step,
                                             settings.log_file, settings.verbose,
                                             append=start_step > 0)
    loop = _TrainingLoop(model, feed, settings, validation, _summary_writers(summaries_dir),
                         history, progress)
    with progress, checkpoint.deferred_interrupts(enabled=saver is not None) as interrupt:
        for first_step, eval_step in training_intervals(settings.steps, settings.eval_step_interval,
                                                        start_step):
            loop.run_interval(first_step, max(first_step, start_step), eval_step)
            if saver and (interrupt.requested or saver.due()):
                saver.save(model.state(eval_step + 1, history, fingerprint))
            if interrupt.requested:
                raise checkpoint.Interrupted(saver.directory, eval_step + 1)
    if saver:
        saver.save(model.state(max(settings.steps, start_step), history, fingerprint))
    if interrupt.requested:  # Ctrl-C after the last interval's check: stop all the same.
        raise checkpoint.Interrupted(saver.directory, max(settings.steps, start_step))
    history.regularization = _choose_candidate(model, validation_features, validation_labels,
                                               num_classes, settings)
    kept = candidates.index(history.regularization["weight_decay"])
    _log_choice(history.regularization)
    return Head(model.weights.numpy()[:, kept], model.biases.numpy()[kept]), history


def _log_choice(regularization):
    scores = ", ".join(
        f"{row['weight_decay']:g}: {row['validation_cross_entropy']:.4f}"
        for row in regularization["candidates"] if row["validation_cross_entropy"] is not None)
    logging.info("Weight decay %g (%s%s), label smoothing %g.", regularization["weight_decay"],
                 regularization["chosen_by"],
                 f"; validation cross-entropy {scores}" if len(regularization["candidates"]) > 1
                 and scores else "", regularization["label_smoothing"])


def _choose_candidate(model, validation_features, validation_labels, num_classes, settings):
    """History.regularization (see train_head): the candidate with the lowest cross-entropy on
    the whole validation split. Cross-entropy, not accuracy: on a few hundred validation images
    the candidates' accuracies tie more often than not (BENCHMARKS.md)."""
    candidates = weight_decay_candidates(settings)
    whole = feeding.Validation(validation_features, np.asarray(validation_labels, np.int32),
                               num_classes, dataclasses.replace(settings, validation_batch_size=-1))
    accuracy, cross_entropy, count = whole.evaluate(model, 0)
    if count == 0:
        kept, chosen_by = 0, "no validation images"
        accuracy = cross_entropy = [None] * len(candidates)
    else:
        kept = int(np.argmin(cross_entropy))
        chosen_by = "validation cross-entropy" if len(candidates) > 1 else "--weight_decay"
    return {
        "weight_decay": candidates[kept], "label_smoothing": settings.label_smoothing,
        "chosen_by": chosen_by, "validation_count": count,
        "candidates": [{"weight_decay": decay,
                        "validation_accuracy": None if a is None else float(a),
                        "validation_cross_entropy": None if c is None else float(c)}
                       for decay, a, c in zip(candidates, accuracy, cross_entropy)]}


def _resume_or_start(checkpoint_settings, fingerprint, model, steps):
    """(checkpoint.Saver or None, History, first step to run); restores model on --resume.

    Adds checkpoint_settings.description to fingerprint (it is saved with the state).
    """
    if not checkpoint_settings:
        return None, History(), 0
    fingerprint.update(checkpoint_settings.description)
    resumed = checkpoint.state_to_resume(checkpoint_settings, fingerprint)
    saver = checkpoint.Saver(checkpoint_settings)
    if resumed is None:
        return saver, History(), 0
    if resumed.next_step > steps:
        raise UserError(
            f"Cannot resume from {checkpoint_settings.directory!r}: it already trained "
            f"{resumed.next_step} steps, more than --how_many_training_steps={steps}; raise it, "
            "drop --resume to start over, or pass a new --checkpoint_path.")
    model.restore(resumed)
    return saver, History(**resumed.history), resumed.next_step


def training_fingerprint(train_features, train_labels, num_classes, settings):
    """What a checkpoint must match to be resumed: the data's shape and labels, and the
    settings that decide the draws and the updates (not the step count: a finished run can
    be resumed with more steps)."""
    return {
        "training_examples": int(train_features.shape[0]),
        "feature_dim": int(train_features.shape[1]),
        "num_classes": int(num_classes),
        "training_labels_sha1": hashlib.sha1(np.ascontiguousarray(train_labels)).hexdigest(),
        **settings_fingerprint(settings),
    }


def settings_fingerprint(settings):
    """The TrainingSettings a resumed run must share with its checkpoint."""
    return {name: getattr(settings, name) for name in (
        "batch_size", "learning_rate", "momentum", "class_balance", "eval_step_interval",
        "validation_batch_size", "seed", "weight_decay", "label_smoothing")}


def _initial_weights(feature_dim, num_classes, seed):
    """float32 [feature_dim, num_classes]: retrain.py's truncated normal, stddev 0.001."""
    # A fixed seed makes runs repeatable: same images, same flags, same model.
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0.0, 0.001, [feature_dim, num_classes]), -0.002, 0.002).astype(
        np.float32)


def training_intervals(steps, interval, start_step=0):
    """Yields (first step, evaluation step) of each run of steps between evaluations, from the
    run that holds start_step on.

    Lazily: a run asked for 10^8 steps (stopped by Ctrl-C) must not build 10^7 pairs before its
    first step, nor walk past the finished ones on --resume.
    """
    for eval_step in evaluation_steps(steps, interval, start_step):
        first_step = 0 if eval_step == 0 else (eval_step - 1) // interval * interval + 1
        yield first_step, eval_step


def evaluation_steps(steps, interval, start_step=0):
    """Yields the steps after which retrain.py evaluates (every `interval` steps from 0, and the
    last) that are not before start_step."""
    first_multiple = -(-start_step // interval) * interval
    yield from range(first_multiple, steps - 1, interval)
    if start_step <= steps - 1:
        yield steps - 1


def is_evaluation_step(step, steps, interval):
    """Whether evaluation_steps(steps, interval) holds step, in constant time."""
    return 0 <= step < steps and (step % interval == 0 or step == steps - 1)


class _TrainingLoop:
    """Runs the steps of one evaluation interval, validates, logs and records."""

    def __init__(self, model, feed, settings, validation, writers, history, progress):
        self.model, self.feed, self.settings = model, feed, settings
        self.validation, self.writers, self.history = validation, writers, history
        self.progress = progress  # progress.TrainingProgress
        self.sampler = sampling.training_sampler(settings.class_balance, feed.labels,
                                                 model.biases.shape[-1])

    def run_interval(self, first_step, start_step, eval_step):
        """Runs steps start_step .. eval_step of the interval that begins at first_step.

        The interval's batches come from one generator seeded with (seed, first_step); a run
        resumed inside it draws them all and skips the ones already trained on.
        """
        rng = sampling.generator_for_step(self.settings.seed, first_step)
        batches = np.stack([self.sampler.sample(rng, self.settings.batch_size)
                            for _ in range(first_step, eval_step + 1)])[start_step - first_step:]
        train_accuracy, cross_entropy = self.feed.train_steps(
            batches, tf.constant(self.settings.learning_rate, tf.float32),
            tf.constant(self.settings.momentum, tf.float32))
        validation_accuracy, validation_cross_entropy, count = self.validation.evaluate(
            self.model, eval_step)
        # Every number is per weight-decay candidate [K]: the Step line shows one of them.
        shown = 0 if validation_cross_entropy is None else int(np.argmin(validation_cross_entropy))
        # In numpy: slicing an eager tensor costs about a millisecond, a tenth of the interval.
        train_accuracy, cross_entropy = train_accuracy.numpy()[shown], cross_entropy.numpy()[shown]
        if validation_accuracy is not None:
            validation_accuracy = float(validation_accuracy[shown])
            validation_cross_entropy = float(validation_cross_entropy[shown])
        _log_step(self.progress, eval_step, float(train_accuracy), float(cross_entropy),
                  validation_accuracy, count)
        _record(self.history, self.writers, eval_step, float(train_accuracy),
                float(cross_entropy), validation_accuracy, validation_cross_entropy)


class _SoftmaxLayer(tf.Module):
    """K softmax layers trained side by side on the same batches, one per weight decay:
    candidate k minimises the mean (smoothed) cross-entropy + weight_decays[k] / 2 *
    |weights[:, k]|^2. Every number the methods return is per candidate, float32 [K]."""

    def __init__(self, initial_weights, class_weights, weight_decays=(0.0,), label_smoothing=0.0):
        """initial_weights: float32 [D, C], every candidate's start; class_weights: float32 [C]."""
        super().__init__()
        candidates = len(weight_decays)
        # [D, K, C]: the [D, K * C] view multiplies a batch by every candidate in one matmul.
        self.weights = tf.Variable(np.repeat(initial_weights[:, None, :], candidates, axis=1))
        self.biases = tf.Variable(tf.zeros([candidates, initial_weights.shape[1]]))
        self.weight_velocity = tf.Variable(tf.zeros_like(self.weights), trainable=False)
        self.bias_velocity = tf.Variable(tf.zeros_like(self.biases), trainable=False)
        # The factor on each class's cross-entropy (sampling.class_loss_weights).
        self.class_weights = tf.constant(class_weights, tf.float32)
        self.weight_decays = tf.constant(weight_decays, tf.float32)  # [K]
        self.label_smoothing = float(label_smoothing)
        self.train_features = self.train_labels = None

    def hold_training_set(self, features, labels):
        # In variables: passed as arguments, XLA would copy the training set each call.
        self.train_features = _variable_filled_in_chunks(features)
        self.train_labels = tf.Variable(labels, trainable=False, dtype=tf.int32)

    def restore(self, state):
        for name in ("weights", "biases", "weight_velocity", "bias_velocity"):
            getattr(self, name).assign(getattr(state, name))

    def state(self, next_step, history, fingerprint):
        return checkpoint.HeadState(
            weights=self.weights.numpy(), biases=self.biases.numpy(),
            weight_velocity=self.weight_velocity.numpy(), bias_velocity=self.bias_velocity.numpy(),
            next_step=next_step, history=dataclasses.asdict(history), fingerprint=fingerprint)

    def logits(self, features):
        """float32 [n, K, C] for float32 features [n, D]."""
        feature_dim, candidates, num_classes = self.weights.shape
        flat = tf.matmul(features, tf.reshape(self.weights, [feature_dim, -1]))
        return tf.reshape(flat, [-1, candidates, num_classes]) + self.biases

    def _scores(self, logits, labels):
        """(correct bool [n, K], cross-entropy with the true labels [n, K], with the smoothed
        targets [n, K]) of logits [n, K, C] for int32 labels [n]."""
        log_probabilities = tf.nn.log_softmax(logits)
        true_class = tf.one_hot(labels, tf.shape(logits)[-1])[:, None, :]
        cross_entropy = -tf.reduce_sum(true_class * log_probabilities, axis=-1)
        smoothed = ((1.0 - self.label_smoothing) * cross_entropy
                    - self.label_smoothing * tf.reduce_mean(log_probabilities, axis=-1))
        correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels[:, None])
        return correct, cross_entropy, smoothed

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64),
                                  tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32)],
                 jit_compile=True)
    def train_steps(self, batches, learning_rate, momentum):
        """One SGD step per row of batches (indices into the held training set [steps, batch]).

        Returns:
          (accuracy, cross-entropy) [K] of the last step's batch, measured before its update.
        """
        accuracy = loss = tf.zeros_like(self.weight_decays)
        for batch_indices in batches:
            accuracy, loss = self._train_step(tf.gather(self.train_features, batch_indices),
                                              tf.gather(self.train_labels, batch_indices),
                                              learning_rate, momentum)
        return accuracy, loss

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32),
                                  tf.TensorSpec([None, None], tf.int32),
                                  tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32)],
                 jit_compile=True)
    def train_steps_on(self, features, labels, learning_rate, momentum):
        """train_steps on batches given as float32 features [steps, batch, feature_dim] and
        int32 labels [steps, batch]."""
        accuracy = loss = tf.zeros_like(self.weight_decays)
        for step in tf.range(tf.shape(labels)[0]):
            accuracy, loss = self._train_step(features[step], labels[step], learning_rate,
                                              momentum)
        return accuracy, loss

    def _train_step(self, features, labels, learning_rate, momentum):
        # Weighted by class for --class_balance=loss_weight; all ones otherwise.
        example_weights = tf.gather(self.class_weights, labels)[:, None]
        with tf.GradientTape() as tape:
            correct, cross_entropy, smoothed = self._scores(self.logits(features), labels)
            # Summed over candidates: each one's gradient is that of its own mean loss.
            loss = tf.reduce_sum(tf.reduce_mean(example_weights * smoothed, axis=0))
        weight_gradient, bias_gradient = tape.gradient(loss, [self.weights, self.biases])
        weight_gradient += self.weight_decays[:, None] * self.weights
        self.weight_velocity.assign(momentum * self.weight_velocity + weight_gradient)
        self.bias_velocity.assign(momentum * self.bias_velocity + bias_gradient)
        self.weights.assign_sub(learning_rate * self.weight_velocity)
        self.biases.assign_sub(learning_rate * self.bias_velocity)
        return (tf.reduce_mean(tf.cast(correct, tf.float32), axis=0),
                tf.reduce_mean(example_weights * cross_entropy, axis=0))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                                  tf.TensorSpec([None], tf.int32)])
    def evaluate(self, features, labels):
        """(number correct int32 [K], summed cross-entropy float32 [K]) on float32 features
        [n, feature_dim] and int32 labels [n]."""
        correct, cross_entropy, _ = self._scores(self.logits(features), labels)
        return (tf.reduce_sum(tf.cast(correct, tf.int32), axis=0),
                tf.reduce_sum(cross_entropy, axis=0))

def _log_step(progress, step, train_accuracy, cross_entropy, validation_accuracy, count):
    """retrain.py's Step lines (same text, same timestamps) to the log, and the progress."""
    now = datetime.datetime.now()
    lines = [f"{now}: Step {step}: Train accuracy = {train_accuracy * 100:.1f}%",
             f"{now}: Step {step}: Cross entropy = {cross_entropy:f}"]
    if validation_accuracy is not None:
        lines.append(f"{now}: Step {step}: Validation accuracy = "
                     f"{validation_accuracy * 100:.1f}% (N={count})")
    progress.log_steps(lines)
    progress.update(step + 1, train_accuracy, cross_entropy, validation_accuracy, count)


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


def _variable_filled_in_chunks(array, chunk_bytes=4 << 20):
    """A float32 variable holding array [n, D], filled chunk by chunk.

    tf.Variable(array) briefly holds the array twice more (a tensor, then the variable's
    own copy): 2x its size above the array itself. Scattering chunks into a variable that
    starts as zeros holds one copy plus a few chunks. Small chunks, because a chunk is a
    fixed cost on top of the array: 64 MB chunks held a 39 MB training split (10,000
    images) in one piece, +121 MB peak; 4 MB chunks +51 MB, and the 390 MB split +431 MB
    against +551 MB, filled faster too (0.2 s against 0.44 s).
    """
    variable = tf.Variable(lambda: tf.zeros(array.shape, tf.float32), trainable=False)
    rows = max(1, chunk_bytes // max(1, 4 * array.shape[1]))
    for start in range(0, len(array), rows):
        stop = min(start + rows, len(array))
        variable.scatter_update(tf.IndexedSlices(tf.constant(array[start:stop], tf.float32),
                                                 tf.range(start, stop)))
    return variable
