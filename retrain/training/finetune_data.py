"""The images fine-tuning reads: which training image each step sees, and with which distortion.

Fine-tuning runs the whole network on images, so it cannot use the bottleneck cache. Every
choice here is a pure function of (seed, step, position in the batch): a resumed run, or a
run on several devices, sees exactly the images and distortions a single uninterrupted run
would.
"""

from absl import logging
import numpy as np
import tensorflow as tf

from retrain.data import dataset
from retrain.data import distort
from retrain.data import preprocess
from retrain.runtime.progress import ProgressLogger


def training_order(num_images, steps, batch_size, seed):
    """Which training image each step uses: epochs of shuffled indices.

    Each epoch is a fresh permutation from one generator seeded with `seed`, so the first
    k steps are the same whatever `steps` is (a resumed run with more steps agrees).

    Returns:
      int64 [steps, batch_size] indices into the training images.
    """
    rng = np.random.default_rng(seed)
    needed = steps * batch_size
    epochs = -(-needed // num_images)
    order = np.concatenate([rng.permutation(num_images) for _ in range(epochs)])[:needed]
    return order.reshape(steps, batch_size).astype(np.int64)


def distortion_seeds(seed, first_step, steps, batch_size):
    """int64 [(steps - first_step) * batch_size, 2]: the stateless seed of each (step, image).

    The seed of the image at position p of step s is (seed, s * batch_size + p): unique
    within a run and independent of how batches are split across devices.
    """
    positions = np.arange(first_step * batch_size, steps * batch_size, dtype=np.int64)
    return np.stack([np.full_like(positions, seed), positions], axis=1)


def training_batches(image_files, labels, order, first_step, image_size, max_pixels,
                     distortions=None, seed=0):
    """A tf.data pipeline of the training batches of steps first_step .. len(order) - 1.

    Args:
      image_files: [dataset.ImageFile] of the training split; labels: int [n] class indices.
      order: int64 [steps, batch_size] from training_order.
      first_step: the first step to yield (non-zero when resuming).
      image_size: (height, width) of the module's input.
      max_pixels: larger images are skipped (see images.decode_image).
      distortions: augment.Distortions, or None for none.
      seed: the run's seed, for distortion_seeds.

    Returns:
      (dataset, errors): dataset yields (images float32 [B, H, W, 3] in [0, 1], labels int32
      [B], ok bool [B]); ok is False for an image that could not be read (its reason lands
      in errors, a dict {position: reason}) and which the loss must ignore.
    """
    steps, batch_size = order.shape
    flat = order[first_step:].reshape(-1)
    paths = [image_files[index].path for index in flat]
    transform = None
    if distortions is not None and distortions.any():
        transform = distort.variant_transform(
            image_size, distortions, distortion_seeds(seed, first_step, steps, batch_size),
            len(paths))
    errors = {}
    batches = preprocess.image_batches(paths, image_size, batch_size, max_pixels, errors,
                                       transform)
    label_table = tf.constant(np.asarray(labels)[flat].astype(np.int32))
    batches = batches.map(lambda index, images, ok: (images, tf.gather(label_table, index), ok))
    return batches, errors


def validation_sample(num_images, sample_size, seed):
    """Sorted indices of the validation images every evaluation uses (int64 [<= sample_size]).

    A fixed sample (not a new one per evaluation, as head training draws) so that
    evaluations compare the network, not the luck of the draw, when picking the best.
    sample_size -1 (or more than there are) takes them all.
    """
    if sample_size == -1 or sample_size >= num_images:
        return np.arange(num_images, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_images, sample_size, replace=False)).astype(np.int64)


def apply_to_images(function, image_files, image_size, batch_size, max_pixels, what=None):
    """Runs function over the images in batches and stacks what it returns.

    Args:
      function: float32 images [B, H, W, 3] in [0, 1] -> float32 tensor [B, ...].
      image_files: [dataset.ImageFile].
      image_size: (height, width); batch_size: images per call.
      what: a name for progress lines (None: no progress lines).

    Returns:
      (outputs float32 [n, ...] in image order, ok bool [n]); images that cannot be read
      give ok False and zero outputs, and a warning naming them.
    """
    batches = preprocess.pixel_batches([image.path for image in image_files], image_size,
                                       batch_size, max_pixels)
    progress = ProgressLogger(what, len(image_files)) if what else None
    outputs, oks = [], []
    for batch in batches:
        outputs.append(function(preprocess.as_unit_float(batch.pixels)).numpy())
        oks.append(batch.ok)
        if progress:
            progress.update(len(batch.indices))
        for index, error in zip(batch.indices, batch.errors):
            if error is not None:
                logging.warning("Skipping %s: %s", dataset.display_path(image_files[index].path),
                                error)
    if not outputs:
        return None, np.zeros([0], bool)
    stacked = np.concatenate(outputs)
    ok = np.concatenate(oks)
    stacked[~ok] = 0
    return stacked, ok
