"""Fine-tuning from the top on cached activations: the default --fine_tune for the built-in
EfficientNet-Lite backbones.

Backpropagation through the whole network at 224 px runs at 3.5-20 images/s on a 2-core CPU,
so a few epochs take longer than anyone waits. Here the network is cut before its last
`blocks` MBConv blocks (backbones.efficientnet_lite.split_at_block): the lower part, frozen,
runs once per image (and once per cached distorted variant) and its output (7x7x192 at 224 px
for the last four blocks of efficientnet_lite0) is kept in memory as float16; the top blocks,
the final 1x1 convolution and the new layer then train for many epochs on that cache, each
epoch a fraction of one forward pass over the images.

The recipe (measured in BENCHMARKS.md, "Fine-tuning from the top (issue 27)"):
- Start from the regularized head (train_head's, with its label smoothing and weight decay).
- Adam, with a linear warm-up over the first epoch and a cosine decay to zero after it; the
  new layer's rate is `head_learning_rate_multiplier` times the network's. Adam's per-variable
  step size does not care that folding BatchNorm scaled the kernels (which made plain SGD
  need a rate of 1e-5 on the whole network).
- BatchNorm stays folded into the convolutions (the backbones have no BatchNorm layers): the
  trained kernels and biases are the folded ones, as if BatchNorm's statistics were frozen
  and its scale and offset trained (the usual choice for small sets, where batch statistics
  are noise), and the export needs no change.
- Each epoch, every training image is seen once, as its original or one of its cached
  distorted variants (chosen at random; with --augmentation_copies and the distortion flags).
- Mixup of the cached activations (mixup_alpha): each batch is blended with a shuffled copy
  of itself, labels in the same proportion. Where a set is learnt to 100% training accuracy
  within a few epochs (Fashion-MNIST), it keeps the later epochs learning something.
- Every epoch of the schedule runs (the cosine decay is shaped for all of them), and after
  each the network is scored on the whole validation split (cheap on the cache). The last
  epoch is kept unless the validation split shows the start, the frozen network, better by
  more than its noise (keeps_fine_tuned); then the latest epoch that passed, or the start.
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

from retrain.data import distort
from retrain.data import distortion_settings
from retrain.data import preprocess
from retrain.errors import UserError
from retrain.features import backbones
from retrain.features import modules
from retrain.runtime.progress import ProgressLogger
from retrain.runtime.progress import TrainingProgress
from retrain.training import finetune
from retrain.training import finetune_checkpoint
from retrain.training import train

SPLITTABLE_FAMILY = "efficientnet_lite"


@dataclasses.dataclass
class TopFineTuneSettings:
    blocks: int  # MBConv blocks trained (with the final 1x1 convolution and the new layer)
    epochs: int  # the schedule's length; every epoch runs
    batch_size: int
    learning_rate: float  # the network's peak rate (Adam)
    head_learning_rate_multiplier: float  # the new layer's rate over the network's
    seed: int
    max_image_pixels: int
    inference_batch_size: int = 16  # images per forward pass of the lower part
    distortions: Optional[distortion_settings.Distortions] = None
    copies: int = 0  # cached distorted variants per training image (with distortions)
    weight_decay: float = 0.0  # the new layer's L2 penalty (the head's)
    label_smoothing: float = 0.0
    dropout: float = 0.0  # on the features, before the new layer, while training
    mixup_alpha: float = 0.0  # mixup of the cached activations (Beta(alpha, alpha)); 0: off
    warmup_epochs: float = 1.0
    log_file: Optional[str] = None
    verbose: bool = False


def splittable(module):
    """Whether module is a built-in backbone fine_tune_top can cut (an EfficientNet-Lite at its
    native input size); other modules take the whole-network path (finetune.fine_tune)."""
    spec = backbones.BUILTIN_BACKBONES.get(module.handle)
    return (spec is not None and spec.family == SPLITTABLE_FAMILY
            and tuple(module.image_size) == tuple(spec.image_size))


def check_blocks(module, blocks):
    """Fails fast, before the bottlenecks, if the cached path cannot train `blocks` blocks.

    Raises:
      UserError: module is splittable and has fewer MBConv blocks than `blocks`.
    """
    if not blocks or not splittable(module):
        return
    from retrain.features.backbones import efficientnet_lite  # pylint: disable=import-outside-toplevel
    spec = backbones.BUILTIN_BACKBONES[module.handle]
    count = len(efficientnet_lite.compute_block_strides(spec.depth_multiplier))
    if blocks > count:
        raise UserError(f"--fine_tune_top_blocks={blocks} is more than the {count} blocks of "
                        f"{module.handle}; pass 1 to {count}, or 0 to fine-tune the whole "
                        "network on images.")


class TopNetwork(tf.Module):
    """The top blocks and the new layer, on cached lower activations.

    activations float16/float32 [B, h, w, c] -> logits float32 [B, C].
    """

    def __init__(self, top, top_layers, head, dropout=0.0):
        super().__init__()
        self.top = top
        self.module_variables = [variable for layer in top_layers
                                 for variable in layer.trainable_weights]
        self.weights = tf.Variable(head.weights, name="final_weights")
        self.biases = tf.Variable(head.biases, name="final_biases")
        self.dropout = dropout
        self.trained_variables = self.module_variables + [self.weights, self.biases]

    def features(self, activations):
        return self.top(tf.cast(activations, tf.float32))

    def logits(self, activations, dropout_seed=None):
        """dropout_seed: int64 [2] while training (stateless, so a resumed run drops the
        same features); None: no dropout."""
        features = self.features(activations)
        if dropout_seed is not None and self.dropout:
            features = tf.nn.experimental.stateless_dropout(features, self.dropout, dropout_seed)
        return tf.matmul(features, self.weights) + self.biases

    def head(self):
        return train.Head(self.weights.numpy(), self.biases.numpy())


def schedule(peak, total_steps, warmup_steps):
    """Linear warm-up from 0 to peak over warmup_steps, then cosine decay to 0 at total_steps."""
    warmup_steps = max(1, min(int(warmup_steps), total_steps - 1))
    return tf_keras.optimizers.schedules.CosineDecay(
        0.0, max(total_steps - warmup_steps, 1), alpha=0.0, warmup_target=peak,
        warmup_steps=warmup_steps)


def make_train_step(network, network_optimizer, head_optimizer, weight_decay, label_smoothing,
                    mixup_alpha=0.0):
    """A tf.function: (activations [B, h, w, c], labels int32 [B], seed int64 [2]) ->
    (mean cross-entropy with the true labels, accuracy) of the batch as trained (mixed, with
    mixup), before the update; it minimises the smoothed cross-entropy plus
    weight_decay / 2 * |W|^2 of the new layer (train.train_head's objective). With
    mixup_alpha, each batch trains on its activations mixed with a shuffled copy of
    themselves, and the labels in the same proportion (manifold mixup at the cut)."""
    head_variables = [network.weights, network.biases]

    def cross_entropy(labels, logits):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)

    def smoothed(per_image, logits):
        return ((1.0 - label_smoothing) * per_image
                - label_smoothing * tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1))

    @tf.function(reduce_retracing=True)
    def train_step(activations, labels, seed):
        activations = tf.cast(activations, tf.float32)
        if mixup_alpha:
            activations, partners, share = _mixup(activations, labels, seed, mixup_alpha)
        with tf.GradientTape() as tape:
            logits = network.logits(activations, seed)
            per_image = cross_entropy(labels, logits)
            loss = smoothed(per_image, logits)
            if mixup_alpha:
                loss = (share * loss
                        + (1.0 - share) * smoothed(cross_entropy(partners, logits), logits))
            objective = (tf.reduce_mean(loss)
                         + weight_decay / 2 * tf.reduce_sum(tf.square(network.weights)))
        gradients = tape.gradient(objective, network.trained_variables)
        count = len(network.module_variables)
        network_optimizer.apply_gradients(zip(gradients[:count], network.module_variables))
        head_optimizer.apply_gradients(zip(gradients[count:], head_variables))
        correct = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels)
        return tf.reduce_mean(per_image), tf.reduce_mean(tf.cast(correct, tf.float32))

    return train_step


def _mixup(activations, labels, seed, alpha):
    """(mixed activations, the partners' labels, the own labels' share, at least 0.5): one
    share per batch from Beta(alpha, alpha), stateless in seed."""
    seed = tf.cast(seed, tf.int64)
    gammas = tf.random.stateless_gamma([2], seed + [0, 1 << 40], alpha)
    share = tf.reduce_max(gammas) / tf.reduce_sum(gammas)
    order = tf.argsort(tf.random.stateless_uniform(tf.shape(labels), seed + [0, 2 << 40]))
    mixed = share * activations + (1.0 - share) * tf.gather(activations, order)
    return mixed, tf.gather(labels, order), share


def fine_tune_top(module, head, data, settings, checkpoint_dir=None, resume=False):
    """Fine-tunes the top blocks + head on cached lower activations; see the module docstring.

    Args:
      module: modules.FeatureModule for which splittable(module) is True.
      head, data, checkpoint_dir, resume: as finetune.fine_tune's.
      settings: TopFineTuneSettings.

    Returns:
      finetune.FineTuneResult; its feature_extractor is the module (hub.KerasLayer) with the
      kept weights in its top blocks, ready to export; its `testing` features are the test
      images through it.
    """
    extractor = modules.load_feature_extractor(module, trainable=True)
    model = backbones.build_feature_model(module.handle)
    _copy_by_name(extractor.variables, model.variables)  # the module's exact weights
    from retrain.features.backbones import efficientnet_lite  # pylint: disable=import-outside-toplevel
    count = efficientnet_lite.block_count(model)
    if not 0 <= settings.blocks <= count:
        raise UserError(f"--fine_tune_top_blocks={settings.blocks} is more than the {count} "
                        f"blocks of {module.handle}; pass 0 to {count}.")
    lower, top, top_layers = efficientnet_lite.split_at_block(model, count - settings.blocks)
    network = TopNetwork(top, top_layers, head, settings.dropout)
    logging.info("Fine-tuning the top %d blocks of %s (%d variables) and the new layer on "
                 "cached activations %s.", settings.blocks, module.handle,
                 len(network.module_variables), "x".join(map(str, lower.output_shape[1:])))
    cache = _ActivationCache(lower, module, settings)
    training_files = data["training"][2]
    train_cache = cache.training(training_files)
    validation = cache.originals(data["validation"][2], "Fine-tuning cache (validation)",
                                 np.float32)
    testing = cache.originals(data["testing"][2], "Fine-tuning cache (test)", np.float32)
    run = _TopRun(network, settings, train_cache, np.asarray(data["training"][1], np.int32),
                  validation, np.asarray(data["validation"][1], np.int32), checkpoint_dir,
                  _description(module, settings, data, network))
    if resume and checkpoint_dir:
        run.restore()
    run.train()
    run.restore_best()
    test_features = _map_batches(network.features, testing.activations)
    _copy_by_name(model.variables, extractor.variables)
    labels, files = np.asarray(data["testing"][1]), data["testing"][2]
    return finetune.FineTuneResult(
        extractor, network.head(),
        (test_features, labels[testing.ok], [f for f, ok in zip(files, testing.ok) if ok]),
        run.history, run.best.steps_done, run.best.validation_accuracy, run.start_accuracy,
        finetune._accuracy(head.probabilities(data["testing"][0]), data["testing"][1]),  # pylint: disable=protected-access
        len(network.module_variables), run.images_per_second())


def _copy_by_name(sources, targets):
    """Assigns each target variable the source variable of the same name.

    Raises:
      UserError: a target has no source of that name and shape (the SavedModel and the
        in-memory network disagree: a backbone cache from another retrain version).
    """
    by_name = {variable.name: variable for variable in sources}
    for target in targets:
        source = by_name.get(target.name)
        if source is None or source.shape != target.shape:
            raise UserError(f"The backbone's SavedModel has no variable {target.name} "
                            f"{target.shape}; delete its backbone cache folder to rebuild it.")
        target.assign(source)


@dataclasses.dataclass
class _Activations:
    activations: np.ndarray  # float16 or float32 [n, h, w, c]
    ok: np.ndarray  # bool [n]: False for an image that could not be read (its row is zeros)


class _ActivationCache:
    """The lower network's outputs for a split, in memory."""

    def __init__(self, lower, module, settings):
        self.lower = tf.function(lambda images: lower(images, training=False),
                                 reduce_retracing=True)
        self.module, self.settings = module, settings
        self.shape = tuple(lower.output_shape[1:])

    def originals(self, image_files, what, dtype=np.float16):
        """The lower outputs of the images as they are; dtype float16 for training rows (half
        the memory), float32 where the numbers are reported (validation, test)."""
        outputs, oks = [], []
        progress = ProgressLogger(what, len(image_files))
        for batch in preprocess.pixel_batches([image.path for image in image_files],
                                              self.module.image_size,
                                              self.settings.inference_batch_size,
                                              self.settings.max_image_pixels):
            outputs.append(self._lower(preprocess.as_unit_float(batch.pixels), dtype))
            oks.append(batch.ok)
            progress.update(len(batch.indices))
        return self._stack(outputs, oks)

    def variants(self, image_files, copy_index):
        """The lower outputs of distorted variant copy_index of each image (as the
        augmentation stage makes it: distort.variant_key seeds it)."""
        distortions = self.settings.distortions
        seeds = np.stack([distort.variant_seed(distort.variant_key(
            image.content_key, distortions, copy_index)) for image in image_files])
        transform = distort.variant_transform(self.module.image_size, distortions, seeds,
                                              len(image_files))
        errors = {}
        batches = preprocess.image_batches([image.path for image in image_files],
                                           self.module.image_size,
                                           self.settings.inference_batch_size,
                                           self.settings.max_image_pixels, errors, transform)
        outputs, oks = [], []
        progress = ProgressLogger(f"Fine-tuning cache (variant {copy_index + 1} of "
                                  f"{self.settings.copies})", len(image_files))
        for _, images, ok in batches:
            outputs.append(self._lower(images))
            oks.append(ok.numpy())
            progress.update(len(oks[-1]))
        return self._stack(outputs, oks)

    def training(self, image_files):
        """float16 [copies + 1, n, h, w, c]: the originals, then each variant; rows of
        unreadable images are left out of training by their ok flags (see _TopRun)."""
        versions = [self.originals(image_files, "Fine-tuning cache (training)")]
        if self.settings.distortions is not None and self.settings.distortions.any():
            versions += [self.variants(image_files, k) for k in range(self.settings.copies)]
        return versions

    def _lower(self, images, dtype=np.float16):
        return self.lower(tf.convert_to_tensor(images)).numpy().astype(dtype)

    def _stack(self, outputs, oks):
        if not outputs:
            return _Activations(np.zeros((0, *self.shape), np.float16), np.zeros([0], bool))
        ok = np.concatenate(oks).astype(bool)
        return _Activations(np.concatenate(outputs)[ok], ok)


def _map_batches(function, activations, batch_size=256):
    """function applied to activations [n, ...] in batches: float32 numpy [n, ...]."""
    if not len(activations):
        return np.zeros([0, 0], np.float32)
    return np.concatenate([function(tf.constant(activations[start:start + batch_size])).numpy()
                           for start in range(0, len(activations), batch_size)])


def keeps_fine_tuned(epoch_correct, start_correct):
    """Whether an epoch's weights are kept rather than the start's, from which validation
    images each gets right (bool arrays [n], the same images): yes, unless the start is better
    by more than the split's noise.

    start_only: images the start gets right and the epoch wrong; epoch_only: the reverse. If
    the two networks were equally good, start_only - epoch_only would be 0 give or take
    sqrt(start_only + epoch_only) (McNemar's test); the start is kept only beyond that. Why not
    the best epoch by validation accuracy: on 200 validation images one image is half a point,
    and on held-out images (3,100 Fashion-MNIST, 3,050 MNIST, 562 textures) the last epoch of the
    cosine schedule was as good as the epoch validation picked, or better (by up to 2.3
    points), in 16 of 18 runs, and 0.1 point worse in the other two (BENCHMARKS.md,
    "Fine-tuning from the top").
    """
    if not len(start_correct):
        return True  # no validation images: nothing to judge by, the schedule's end is kept
    start_only = int(np.sum(start_correct & ~epoch_correct))
    epoch_only = int(np.sum(epoch_correct & ~start_correct))
    return start_only - epoch_only <= np.sqrt(start_only + epoch_only)


class _TopRun:
    """The epochs of one run: sampling, steps, validation, the best weights, checkpoints."""

    def __init__(self, network, settings, train_versions, train_labels, validation,
                 validation_labels, checkpoint_dir, description):
        self.network, self.settings = network, settings
        # Images unreadable in any version drop out of training altogether.
        usable = np.logical_and.reduce([version.ok for version in train_versions])
        self.train_versions = [version.activations[usable[version.ok]]
                               for version in train_versions]
        self.train_labels = train_labels[usable]
        self.validation = validation.activations
        self.validation_labels = validation_labels[validation.ok]
        self.checkpoint_dir, self.description = checkpoint_dir, description
        self.steps_per_epoch = max(1, -(-len(self.train_labels) // settings.batch_size))
        total = self.steps_per_epoch * settings.epochs
        warmup = settings.warmup_epochs * self.steps_per_epoch
        self.network_optimizer = tf_keras.optimizers.Adam(
            schedule(settings.learning_rate, total, warmup))
        self.head_optimizer = tf_keras.optimizers.Adam(
            schedule(settings.learning_rate * settings.head_learning_rate_multiplier, total,
                     warmup))
        self.network_optimizer.build(network.module_variables)
        self.head_optimizer.build([network.weights, network.biases])
        self.history = train.History()
        self.next_epoch, self.best = 0, None
        # The start is scored here, before a resumed run restores later weights.
        self.start_accuracy, self.start_cross_entropy, self.start_correct = self._validate()
        self.step_seconds, self.images_trained = 0.0, 0

    def _optimizer_variables(self):
        return list(self.network_optimizer.variables) + list(self.head_optimizer.variables)

    def restore(self):
        state = finetune_checkpoint.load_latest(self.checkpoint_dir, self.description)
        if state is None:
            return
        finetune._assign(self.network.trained_variables, state.variable_values)  # pylint: disable=protected-access
        finetune._assign(self._optimizer_variables(), state.optimizer_values)  # pylint: disable=protected-access
        self.next_epoch, self.best = state.next_step, state.best
        self.history = train.History(**state.history)
        logging.info("Resuming fine-tuning at epoch %d of %d.", self.next_epoch + 1,
                     self.settings.epochs)

    def train(self):
        settings = self.settings
        if self.best is None:
            logging.info("Fine-tune start: Validation accuracy = %s (the frozen module with the "
                         "trained layer)", finetune._percent(self.start_accuracy, len(self.validation_labels)))  # pylint: disable=protected-access
            self.best = self._snapshot(0, self.start_accuracy, self.start_cross_entropy)
            self._record(0, None, None, self.start_accuracy, self.start_cross_entropy)
        train_step = make_train_step(self.network, self.network_optimizer, self.head_optimizer,
                                     settings.weight_decay, settings.label_smoothing,
                                     settings.mixup_alpha)
        with TrainingProgress("Fine-tuning", settings.epochs * self.steps_per_epoch,
                              self.next_epoch * self.steps_per_epoch, settings.log_file,
                              settings.verbose, append=True) as progress:
            for epoch in range(self.next_epoch, settings.epochs):
                accuracy, loss = self._epoch(epoch, train_step, progress)
                validation_accuracy, cross_entropy, correct = self._validate()
                self._record(epoch + 1, accuracy, loss, validation_accuracy, cross_entropy)
                now = datetime.datetime.now()
                progress.log_steps([
                    f"{now}: Fine-tune epoch {epoch + 1}: Train accuracy = {accuracy * 100:.1f}%",
                    f"{now}: Fine-tune epoch {epoch + 1}: Cross entropy = {loss:f}",
                    f"{now}: Fine-tune epoch {epoch + 1}: Validation accuracy = "
                    + finetune._percent(validation_accuracy, len(self.validation_labels))])  # pylint: disable=protected-access
                if keeps_fine_tuned(correct, self.start_correct):
                    self.best = self._snapshot(epoch + 1, validation_accuracy, cross_entropy)
                self.next_epoch = epoch + 1
                self._save_latest()

    def _epoch(self, epoch, train_step, progress):
        """One pass over the training images, each as a random one of its cached versions."""
        rng = np.random.default_rng([self.settings.seed, epoch])
        order = rng.permutation(len(self.train_labels))
        version = rng.integers(0, len(self.train_versions), len(order))
        accuracies, losses = [], []
        batch_size = self.settings.batch_size
        for step, start in enumerate(range(0, len(order), batch_size)):
            rows, versions = order[start:start + batch_size], version[start:start + batch_size]
            batch = np.stack([self.train_versions[v][row] for v, row in zip(versions, rows)])
            started = time.monotonic()
            loss, accuracy = train_step(
                tf.constant(batch), tf.constant(self.train_labels[rows]),
                tf.constant([self.settings.seed, epoch * self.steps_per_epoch + step], tf.int64))
            loss, accuracy = float(loss), float(accuracy)
            if epoch or step:  # the first step traces the function: not a speed
                self.step_seconds += time.monotonic() - started
                self.images_trained += len(rows)
            accuracies.append(accuracy)
            losses.append(loss)
            progress.update(epoch * self.steps_per_epoch + step + 1, accuracy, loss,
                            self.history.validation_accuracy[-1] if self.history.steps else None,
                            len(self.validation_labels))
        return float(np.mean(accuracies)), float(np.mean(losses))

    def _validate(self):
        """(accuracy, mean cross-entropy, bool [n]: which images are right) on the whole
        validation split; (None, None, empty) if it is empty."""
        if not len(self.validation_labels):
            return None, None, np.zeros([0], bool)
        logits = _map_batches(self.network.logits, self.validation)
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=self.validation_labels, logits=logits)
        correct = np.argmax(logits, axis=1) == self.validation_labels
        return float(np.mean(correct)), float(tf.reduce_mean(cross_entropy)), correct

    def _record(self, epoch, train_accuracy, cross_entropy, validation_accuracy,
                validation_cross_entropy):
        for name, value in (("steps", epoch), ("train_accuracy", train_accuracy),
                            ("cross_entropy", cross_entropy),
                            ("validation_accuracy", validation_accuracy),
                            ("validation_cross_entropy", validation_cross_entropy)):
            getattr(self.history, name).append(value)

    def _snapshot(self, epochs_done, validation_accuracy, validation_cross_entropy):
        best = finetune_checkpoint.Best(
            [variable.numpy() for variable in self.network.trained_variables], epochs_done,
            validation_accuracy, validation_cross_entropy)
        if self.checkpoint_dir:
            finetune_checkpoint.save_best(self.checkpoint_dir, best)
        return best

    def _save_latest(self):
        if self.checkpoint_dir:
            finetune_checkpoint.save_latest(self.checkpoint_dir, finetune_checkpoint.LatestState(
                [variable.numpy() for variable in self.network.trained_variables],
                [variable.numpy() for variable in self._optimizer_variables()], self.next_epoch,
                dataclasses.asdict(self.history), self.best), self.description)

    def restore_best(self):
        finetune._assign(self.network.trained_variables, self.best.values)  # pylint: disable=protected-access
        logging.info(self.kept_message())

    def kept_message(self):
        """What was kept and why, in words: a kept epoch may score below the start on
        validation (keeps_fine_tuned), which would look like a mistake without the reason."""
        start = finetune._percent(self.start_accuracy, len(self.validation_labels))  # pylint: disable=protected-access
        if self.best.steps_done == 0:
            return (f"Fine-tuning keeps the start, the frozen module with the trained layer "
                    f"(validation accuracy {start}): every epoch was worse on validation by "
                    "more than the split's noise.")
        kept = finetune._percent(self.best.validation_accuracy, len(self.validation_labels))  # pylint: disable=protected-access
        message = (f"Fine-tuning keeps the weights after {self.best.steps_done} of "
                   f"{self.settings.epochs} epochs (validation accuracy {kept}")
        if self.start_accuracy is not None:
            message += f"; the start's {self.start_accuracy * 100:.1f}%"
            if self.best.validation_accuracy < self.start_accuracy:
                message += "; the difference is within the split's noise, so they stay"
        return message + ")."

    def images_per_second(self):
        return self.images_trained / self.step_seconds if self.step_seconds else 0.0


def _description(module, settings, data, network):
    """What a resumed run must match: the module, the settings that shape the epochs, the data."""
    digest = hashlib.sha1()
    for name in ("training", "validation"):
        for image, label in zip(data[name][2], data[name][1]):
            digest.update(image.content_key + int(label).to_bytes(4, "little"))
    described = {key: value for key, value in dataclasses.asdict(settings).items()
                 if key not in ("log_file", "verbose", "inference_batch_size", "distortions",
                                "max_image_pixels")}
    return {"path": "cached_top", "module": module.identity, **described,
            "distortions": settings.distortions.describe() if settings.distortions else "none",
            "variables": [variable.name for variable in network.trained_variables],
            "images": digest.hexdigest()}
