"""Fine-tuning (--fine_tune): after the new layer is trained on cached bottlenecks, the module
and that layer are trained together, end to end, on the training images.

The step is SGD with momentum on the softmax cross-entropy of a batch, split across all
devices of the distribution strategy (the gradients of the replicas are summed, each replica's
loss divided by the global batch size, so several devices take the step one device would).
The module runs with training=False: BatchNorm layers keep their ImageNet statistics (the
usual choice for small datasets, where batch statistics of 16 images are noise) while every
chosen variable, BatchNorm's scale and offset included, still gets its gradient. The built-in
backbones have BatchNorm folded into their convolutions, so there is nothing to freeze there.

Every `eval_interval` steps the network is scored on a fixed sample of validation images; the
weights with the best validation accuracy (the starting point included) are kept, in memory
and in <checkpoint_dir>/best.npz, and restored at the end.
"""

import dataclasses
import datetime
import hashlib
import time
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from retrain.data import distortion_settings
from retrain.errors import UserError
from retrain.features import modules
from retrain.runtime.progress import TrainingProgress
from retrain.training import finetune_checkpoint
from retrain.training import finetune_data
from retrain.training import train

CHECKPOINT_FOLDER = "fine_tune"  # inside --checkpoint_path, beside the head's folder


@dataclasses.dataclass
class FineTuneSettings:
    steps: int
    batch_size: int  # images per step, across all devices
    learning_rate: float
    momentum: float
    eval_interval: int  # steps between validation evaluations
    validation_batch_size: int  # validation images per evaluation; -1: all
    layers: int  # fine-tune the module's last `layers` layers (see trainable_layers); 0: all
    seed: int
    max_image_pixels: int
    inference_batch_size: int = 16  # images per forward pass when scoring validation and test
    distortions: Optional[distortion_settings.Distortions] = None  # of the training images; None: none
    # Where every evaluation's "Fine-tune step" lines are appended, as the run goes (after
    # the head's Step lines: the same file as train.TrainingSettings.log_file); None: nowhere.
    log_file: Optional[str] = None
    verbose: bool = False  # those lines on the console too
    # The new layer's L2 penalty and label smoothing, as the head was trained with them
    # (train.History.regularization): fine-tuning goes on towards the same objective.
    weight_decay: float = 0.0
    label_smoothing: float = 0.0


@dataclasses.dataclass
class FineTuneResult:
    feature_extractor: object  # hub.KerasLayer holding the fine-tuned module weights
    head: train.Head  # the fine-tuned new layer
    testing: tuple  # (features float32 [n, D] through the fine-tuned module, labels, image_files)
    history: train.History
    best_steps_done: int  # steps trained when the kept weights were reached (0: the start)
    best_validation_accuracy: Optional[float]  # None without validation images
    start_validation_accuracy: Optional[float]  # the frozen module with the trained layer
    frozen_test_accuracy: Optional[float]  # the test split before fine-tuning; None: no test
    trained_variables: int  # how many module variables were fine-tuned
    images_per_second: float  # training images per second in the training steps


def trainable_layers(variables):
    """Groups a module's trainable variables into layers, in the order the module lists them.

    A layer is the variables whose names share everything before the last "/"
    ("block15_project/kernel:0" and "block15_project/bias:0" are layer "block15_project").
    For the built-in backbones that order is the network's, from "stem" to "head".

    Returns:
      [(layer name, [tf.Variable])].
    """
    groups = {}
    for variable in variables:
        name = variable.name.rsplit("/", 1)[0] if "/" in variable.name else variable.name
        groups.setdefault(name.split(":")[0], []).append(variable)
    return list(groups.items())


def check_fine_tunable(module, layers):
    """Fails fast, before any long work, if the module cannot be fine-tuned as asked.

    Raises:
      UserError: the module has no trainable variables, or fewer layers than `layers`.
    """
    try:
        variables = modules.load_feature_extractor(module, trainable=True).trainable_variables
    except UserError:
        raise
    except Exception as error:  # tensorflow_hub refuses trainable TF1 modules in several ways.
        logging.info("Loading %s as trainable failed: %s", module.handle, error)
        variables = []
    groups = trainable_layers(variables)
    if not groups:
        raise UserError(
            f"--fine_tune: module {module.handle!r} has no trainable variables (a TF1 hub module "
            "or a frozen graph?); drop --fine_tune, or use a module saved with trainable variables "
            "(a TF2 SavedModel, such as the built-in backbones).")
    if layers > len(groups):
        raise UserError(f"--fine_tune_layers={layers} is more than the {len(groups)} layers module "
                        f"{module.handle!r} has; pass at most {len(groups)}, or 0 for all of them.")
    return groups


class FineTuneNetwork(tf.Module):
    """The module and the new layer as one network: float32 images [B, H, W, 3] -> logits [B, C]."""

    def __init__(self, feature_extractor, head, layers):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.weights = tf.Variable(head.weights, name="final_weights")
        self.biases = tf.Variable(head.biases, name="final_biases")
        groups = trainable_layers(feature_extractor.trainable_variables)
        chosen = groups[-layers:] if layers else groups
        self.module_variables = [variable for _, group in chosen for variable in group]
        self.trained_variables = self.module_variables + [self.weights, self.biases]
        self.features = tf.function(lambda images: feature_extractor(images, training=False),
                                    reduce_retracing=True)

    def logits(self, images):
        # training=False: BatchNorm keeps its statistics; see the module docstring.
        features = self.feature_extractor(images, training=False)
        return tf.matmul(features, self.weights) + self.biases

    def head(self):
        return train.Head(self.weights.numpy(), self.biases.numpy())


def make_train_step(network, optimizer, strategy, global_batch_size, weight_decay=0.0,
                    label_smoothing=0.0):
    """A tf.function: one distributed batch -> (mean cross-entropy, accuracy) before the update.

    The step minimises the cross-entropy with smoothed targets plus weight_decay / 2 * |W|^2
    of the new layer's weights (not the module's), as train.train_head did; the cross-entropy
    it returns is with the true labels.
    """
    def replica_step(images, labels, ok):
        weight = tf.cast(ok, tf.float32)  # unreadable images are blanks that must not count
        with tf.GradientTape() as tape:
            logits = network.logits(images)
            per_image = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            smoothed = ((1.0 - label_smoothing) * per_image
                        - label_smoothing * tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1))
            # Over the global batch: the replicas' gradients are summed into the batch mean
            # (and the penalty's, counted once per replica, into one penalty).
            objective = (tf.reduce_sum(smoothed * weight) / global_batch_size
                         + weight_decay / 2 * tf.reduce_sum(tf.square(network.weights))
                         / strategy.num_replicas_in_sync)
            loss = tf.reduce_sum(per_image * weight) / global_batch_size
        gradients = tape.gradient(objective, network.trained_variables)
        optimizer.apply_gradients(zip(gradients, network.trained_variables))
        correct = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels)
        return loss, tf.reduce_sum(tf.cast(correct, tf.float32) * weight)

    @tf.function
    def train_step(images, labels, ok):
        loss, correct = strategy.run(replica_step, args=(images, labels, ok))
        return (strategy.reduce("SUM", loss, axis=None),
                strategy.reduce("SUM", correct, axis=None) / global_batch_size)

    return train_step


def fine_tune(module, head, data, settings, checkpoint_dir=None, strategy=None, resume=False):
    """Fine-tunes module + head on the training images and re-scores the test split.

    Args:
      module: modules.FeatureModule (its SavedModel is loaded afresh, trainable).
      head: train.Head trained on the frozen module's bottlenecks: the starting point.
      data: {"training"|"validation"|"testing": (features float32 [n, D], labels int [n],
        [dataset.ImageFile])}, as pipeline.split_arrays gives; features are used only to
        report the frozen test accuracy.
      settings: FineTuneSettings.
      checkpoint_dir: folder for best.npz and latest.npz (None: no checkpoints, no resume).
      strategy: tf.distribute strategy to train under (None: the default, one device).
      resume: continue from checkpoint_dir/latest.npz if it is there.

    Returns:
      FineTuneResult; its weights are those of the best validation accuracy.
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        network = FineTuneNetwork(modules.load_feature_extractor(module, trainable=True), head,
                                  settings.layers)
        optimizer = tf_keras.optimizers.SGD(settings.learning_rate, momentum=settings.momentum)
        optimizer.build(network.trained_variables)
    logging.info("Fine-tuning %d of the module's %d trainable variables and the new layer: %d "
                 "steps of %d images on %d device(s).", len(network.module_variables),
                 len(network.feature_extractor.trainable_variables), settings.steps,
                 settings.batch_size, strategy.num_replicas_in_sync)
    run = _Run(network, optimizer, strategy, module, data, settings, checkpoint_dir)
    if resume and checkpoint_dir:
        run.restore()
    run.train()
    run.restore_best()
    testing = _rescore_testing(network, module, data["testing"], settings)
    return FineTuneResult(
        network.feature_extractor, network.head(), testing, run.history, run.best.steps_done,
        run.best.validation_accuracy, run.start_accuracy,
        _accuracy(head.probabilities(data["testing"][0]), data["testing"][1]),
        len(network.module_variables), run.images_per_second())


class _Run:
    """The state of one fine-tuning run: steps, evaluations, the best weights, checkpoints."""

    def __init__(self, network, optimizer, strategy, module, data, settings, checkpoint_dir):
        self.network, self.optimizer, self.strategy = network, optimizer, strategy
        self.module, self.settings, self.checkpoint_dir = module, settings, checkpoint_dir
        _, self.train_labels, self.train_files = data["training"]
        _, validation_labels, validation_files = data["validation"]
        sample = finetune_data.validation_sample(len(validation_files),
                                                 settings.validation_batch_size, settings.seed)
        self.validation_files = [validation_files[index] for index in sample]
        self.validation_labels = np.asarray(validation_labels)[sample]
        self.validation_count = len(sample)
        self.order = finetune_data.training_order(len(self.train_files), settings.steps,
                                                  settings.batch_size, settings.seed)
        self.history = train.History()
        self.next_step = 0
        self.best = None
        self.start_accuracy = None
        self.step_seconds, self.steps_run = 0.0, 0
        self.description = _description(module, network, settings, data)
        self.progress = None  # TrainingProgress, while train() runs
        self.last_validation_accuracy = None  # in [0, 1], of the latest evaluation

    def restore(self):
        state = finetune_checkpoint.load_latest(self.checkpoint_dir, self.description)
        if state is None:
            logging.info("No fine-tuning checkpoint in %s: starting from step 0.",
                         self.checkpoint_dir)
            return
        if state.next_step > self.settings.steps:
            raise UserError(f"Cannot resume fine-tuning from {self.checkpoint_dir!r}: it already "
                            f"ran {state.next_step} steps, more than --fine_tune_steps="
                            f"{self.settings.steps}; raise it, or drop --resume to start over.")
        _assign(self.network.trained_variables, state.variable_values)
        _assign(self.optimizer.variables, state.optimizer_values)
        self.next_step, self.best = state.next_step, state.best
        self.history = train.History(**state.history)
        logging.info("Resuming fine-tuning at step %d of %d.", self.next_step, self.settings.steps)

    def train(self):
        if self.best is None:
            self.start_accuracy, cross_entropy = self._validate()
            logging.info("Fine-tune start: Validation accuracy = %s (the frozen module with the "
                         "trained layer)", _percent(self.start_accuracy, self.validation_count))
            self.best = self._snapshot(0, self.start_accuracy, cross_entropy)
        batches, errors = finetune_data.training_batches(
            self.train_files, self.train_labels, self.order, self.next_step,
            self.module.image_size, self.settings.max_image_pixels, self.settings.distortions,
            self.settings.seed)
        train_step = make_train_step(self.network, self.optimizer, self.strategy,
                                     self.settings.batch_size, self.settings.weight_decay,
                                     self.settings.label_smoothing)
        distributed = iter(self.strategy.experimental_distribute_dataset(batches))
        first_step = self.next_step
        self.progress = TrainingProgress("Fine-tuning", self.settings.steps, first_step,
                                         self.settings.log_file, self.settings.verbose,
                                         append=True)
        with self.progress:
            for step in range(first_step, self.settings.steps):
                started = time.monotonic()
                loss, accuracy = train_step(*next(distributed))
                loss, accuracy = float(loss), float(accuracy)
                if step > first_step:  # The first step traces the function: not a speed.
                    self.step_seconds += time.monotonic() - started
                    self.steps_run += 1
                if train.is_evaluation_step(step, self.settings.steps,
                                            self.settings.eval_interval):
                    self._evaluate(step, accuracy, loss)
                self.progress.update(step + 1, accuracy, loss, self.last_validation_accuracy,
                                     self.validation_count)
        if errors:
            logging.warning("Fine-tuning skipped %d unreadable training image reads.", len(errors))

    def _evaluate(self, step, train_accuracy, cross_entropy):
        validation_accuracy, validation_cross_entropy = self._validate()
        now = datetime.datetime.now()
        lines = [f"{now}: Fine-tune step {step}: Train accuracy = {train_accuracy * 100:.1f}%",
                 f"{now}: Fine-tune step {step}: Cross entropy = {cross_entropy:f}"]
        if validation_accuracy is not None:
            self.last_validation_accuracy = validation_accuracy
            lines.append(f"{now}: Fine-tune step {step}: Validation accuracy = "
                         f"{_percent(validation_accuracy, self.validation_count)}")
        self.progress.log_steps(lines)
        for name, value in (("steps", step), ("train_accuracy", train_accuracy),
                            ("cross_entropy", cross_entropy),
                            ("validation_accuracy", validation_accuracy),
                            ("validation_cross_entropy", validation_cross_entropy)):
            getattr(self.history, name).append(value)
        if _is_better(validation_accuracy, validation_cross_entropy, self.best):
            self.best = self._snapshot(step + 1, validation_accuracy, validation_cross_entropy)
        self.next_step = step + 1
        if self.checkpoint_dir:
            finetune_checkpoint.save_latest(self.checkpoint_dir, finetune_checkpoint.LatestState(
                [variable.numpy() for variable in self.network.trained_variables],
                [variable.numpy() for variable in self.optimizer.variables], self.next_step,
                dataclasses.asdict(self.history), self.best), self.description)

    def _snapshot(self, steps_done, validation_accuracy, validation_cross_entropy):
        best = finetune_checkpoint.Best(
            [variable.numpy() for variable in self.network.trained_variables], steps_done,
            validation_accuracy, validation_cross_entropy)
        if self.checkpoint_dir:
            finetune_checkpoint.save_best(self.checkpoint_dir, best)
        return best

    def _validate(self):
        """(accuracy in [0, 1], mean cross-entropy) on the validation sample through the
        current network; (None, None) without validation images."""
        if not self.validation_count:
            return None, None
        logits, ok = finetune_data.apply_to_images(
            self.network.logits, self.validation_files, self.module.image_size,
            self.settings.inference_batch_size, self.settings.max_image_pixels)
        logits, labels = logits[ok], self.validation_labels[ok].astype(np.int32)
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return _accuracy(logits, labels), float(tf.reduce_mean(cross_entropy))

    def restore_best(self):
        if self.best.steps_done != self.next_step:
            _assign(self.network.trained_variables, self.best.values)
        logging.info("Fine-tuning keeps the weights after %d of %d steps (validation accuracy %s).",
                     self.best.steps_done, self.settings.steps,
                     _percent(self.best.validation_accuracy, self.validation_count))

    def images_per_second(self):
        """Training images per second in the steps themselves (evaluations not counted)."""
        if not self.step_seconds:
            return 0.0
        return self.steps_run * self.settings.batch_size / self.step_seconds


def _rescore_testing(network, module, testing, settings):
    """The test split's features through the fine-tuned module (the cached ones are frozen)."""
    _, labels, image_files = testing
    features, ok = finetune_data.apply_to_images(
        network.features, image_files, module.image_size, settings.inference_batch_size,
        settings.max_image_pixels, what="Test features")
    if features is None:
        return testing
    return (features[ok], np.asarray(labels)[ok], [image for image, good in zip(image_files, ok)
                                                   if good])


def _description(module, network, settings, data):
    """What a resumed run must match: the module, the settings that shape the steps, the data."""
    digest = hashlib.sha1()
    for name in ("training", "validation"):
        for image, label in zip(data[name][2], data[name][1]):
            digest.update(image.content_key + int(label).to_bytes(4, "little"))
    return {"module": module.identity, "image_size": list(module.image_size),
            "batch_size": settings.batch_size, "learning_rate": settings.learning_rate,
            "momentum": settings.momentum, "layers": settings.layers, "seed": settings.seed,
            "weight_decay": settings.weight_decay, "label_smoothing": settings.label_smoothing,
            "validation_batch_size": settings.validation_batch_size,
            "distortions": settings.distortions.describe() if settings.distortions else "none",
            "variables": [variable.name for variable in network.trained_variables],
            "images": digest.hexdigest()}


def _is_better(accuracy, cross_entropy, best):
    """Whether an evaluation beats the best so far: higher validation accuracy, or the same
    with lower cross-entropy (small validation sets often tie at their top accuracy).
    Without validation images there is nothing to choose by: the latest weights win."""
    if accuracy is None or best.validation_accuracy is None:
        return True
    return (accuracy, -cross_entropy) > (best.validation_accuracy, -best.validation_cross_entropy)


def _assign(variables, values):
    for variable, value in zip(variables, values):
        variable.assign(value)


def _accuracy(scores, labels):
    """Top-1 accuracy in [0, 1] of scores [n, C] against labels [n]; None if n is 0."""
    if len(labels) == 0:
        return None
    return float(np.mean(np.argmax(scores, axis=1) == np.asarray(labels)))


def _percent(accuracy, count):
    if accuracy is None:
        return "n/a (no validation images)"
    return f"{accuracy * 100:.1f}% (N={count})"
