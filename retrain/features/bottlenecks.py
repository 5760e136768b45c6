"""Computing bottlenecks (the module's feature vectors) in batches, and caching them.

Worker threads read, decode and resize the images (preprocess.pixel_batches) ahead of the
module, which gets full 8-bit batches; the vectors go to the on-disk cache as
they come, so an interrupted run resumes where it stopped.
"""

import dataclasses
import functools

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_hub as hub

from retrain.data import dataset
from retrain.data import distort
from retrain.data import preprocess
from retrain.features import bottleneck_cache
from retrain.features import modules
from retrain.features import row_store
from retrain.features.bottleneck_cache import BottleneckCache, module_cache_dir
from retrain.runtime import batch_tuning
from retrain.runtime import devices
from retrain.runtime.precision import FLOAT32, forward_in
from retrain.runtime.progress import ProgressLogger


@dataclasses.dataclass
class Bottlenecks:
    """Feature vectors of the usable images: features[i] belongs to image_files[i]."""

    image_files: list  # [dataset.ImageFile]
    # float32 [num_images, feature_dim]: an array in memory, or, when that would not fit the
    # memory budget, a row_store.RowStore reading the rows from the cache as they are needed.
    features: object
    failed: list  # [dataset.SkippedFile]: images that could not be decoded
    computed: int  # how many vectors this run computed (the rest came from the cache)


def default_memory_budget():
    """Bytes the bottlenecks may take in memory: half of what is available at the start, the
    other half left for TensorFlow, the module and everything else on the machine."""
    available = row_store.available_memory_bytes()
    # Where the available memory cannot be read, a budget most machines that run TensorFlow have.
    return available // 2 if available is not None else 4 << 30


def fits_in_memory(num_images, feature_dim, memory_budget):
    """Whether the bottleneck array fits the budget twice: once as the array, once as the copy
    of its training split that training keeps (retrain.training.train)."""
    return 2 * num_images * feature_dim * 4 <= memory_budget


def get_bottlenecks(image_files, module, bottleneck_dir, batch_size, max_pixels,
                    memory_budget=None, distortions=None, precision=FLOAT32):
    """Returns the bottlenecks of image_files, computing only those not cached yet.

    Args:
      image_files: [dataset.ImageFile] to get vectors for; the result keeps their order.
      module: modules.FeatureModule.
      bottleneck_dir: root of the cache (each module gets a subfolder).
      batch_size: images per forward pass of the module (None: chosen by
        batch_tuning.batch_size_candidates).
      max_pixels: larger images are skipped (see images.decode_image).
      memory_budget: bytes the vectors may take in memory (None: default_memory_budget());
        beyond it (see fits_in_memory) they are read from the cache as training needs them.
      distortions: None, or augment.Distortions when image_files are distorted variants whose
        content_key is their augment.variant_key (see compute_and_store).
      precision: the forward pass's number format (retrain.runtime.precision, checked by the caller);
        each has its own cache.
    """
    cache = BottleneckCache(module_cache_dir(bottleneck_dir, module, precision))
    description = cache.read_description()
    feature_dim = description.get("feature_dim") if description else None
    keys = [image.content_key for image in image_files]
    shards = cache.open_shards(feature_dim) if feature_dim else []
    positions = bottleneck_cache.locate_keys(shards, keys)
    missing = [image for image, position in zip(image_files, positions) if position < 0]
    logging.info("Bottlenecks: %d of %d images cached, %d to compute.",
                 len(image_files) - len(missing), len(image_files), len(missing))
    new_vectors, failed = {}, []
    if missing or feature_dim is None:
        layer = modules.load_feature_extractor(module)
        feature_dim = modules.feature_dim(module)
        cache.prepare({"handle": module.handle, "identity": module.identity,
                       "image_size": list(module.image_size), "feature_dim": feature_dim,
                       **({} if precision == FLOAT32 else {"precision": precision})})
        with forward_in(precision):
            new_vectors, failed = compute_and_store(layer, module, missing,
                                                    cache.writer(feature_dim), batch_size,
                                                    max_pixels, distortions)
        # The new vectors are in the cache now: read everything from there, in one way.
        shards = cache.open_shards(feature_dim)
        positions = bottleneck_cache.locate_keys(shards, keys)
    usable, store = _row_store(image_files, shards, positions, new_vectors, feature_dim)
    budget = default_memory_budget() if memory_budget is None else memory_budget
    if fits_in_memory(len(store), feature_dim, budget):
        features = store.to_array()
    else:
        logging.info("Bottlenecks: %.2f GB, more than fits in %.2f GB of memory (twice); training "
                     "reads them from the cache as it goes.", store.nbytes / 1e9, budget / 1e9)
        features = store
    return Bottlenecks(usable, features, failed, computed=len(new_vectors))


def _row_store(image_files, shards, positions, new_vectors, feature_dim):
    """(usable images, row_store.RowStore of their vectors): cached rows, and any new vector
    the cache no longer shows (a concurrent run compacting it) from memory."""
    positions = positions.copy()
    cached_rows = sum(len(records) for records in shards)
    extra_keys = {}
    for index in np.flatnonzero(positions < 0):
        key = image_files[index].content_key
        if key in new_vectors:
            positions[index] = cached_rows + extra_keys.setdefault(key, len(extra_keys))
    extra = np.stack([new_vectors[key] for key in extra_keys]) if extra_keys else None
    usable_rows = positions >= 0
    usable = [image for image, ok in zip(image_files, usable_rows) if ok]
    return usable, row_store.RowStore.from_shards(shards, positions[usable_rows], feature_dim,
                                                  extra)


def compute_and_store(layer, module, image_files, writer, batch_size, max_pixels,
                      distortions=None, strategy=None, forward_streams=None):
    """Runs the module over image_files in batches, handing each vector to the cache writer.

    With distortions (augment.Distortions), image_files are distorted variants: each one's
    content_key is its augment.variant_key, which also seeds its distortion, so the vector
    cached under a key is always the same variant.

    Args:
      layer: the module as a Keras layer (modules.load_feature_extractor).
      batch_size: images per forward pass; None: batch_tuning's choice among its candidates.
      strategy: tf.distribute strategy (None: devices.distribution_strategy()). With more
        than one replica each batch is split across the devices, and `layer` is not used:
        the module is loaded again with its variables on every device.
      forward_streams: forward passes run at once (streams.ordered_map), each on its own
        batch; None: devices.forward_streams(). Always 1 with several devices.

    Returns:
      ({content_key: float32 [D] vector}, [dataset.SkippedFile] for undecodable images).
    """
    if not image_files:
        return {}, []
    paths = [image.path for image in image_files]
    candidates = batch_tuning.batch_size_candidates(batch_size, len(image_files))
    read_size = max(candidates)
    if distortions is None:
        batches = preprocess.pixel_batches(paths, module.image_size, read_size, max_pixels)
    else:
        seeds = np.stack([distort.variant_seed(image.content_key) for image in image_files])
        batches = distort.distorted_batches(paths, module.image_size, read_size, max_pixels,
                                            distortions, seeds)
    strategy = strategy or devices.distribution_strategy()
    if strategy.num_replicas_in_sync > 1:
        forward_streams = 1  # One graph already runs every device's share at once.
    extract = make_extractor(layer, module, read_size, strategy)
    progress = ProgressLogger("Bottlenecks", len(image_files))
    vectors, failed = {}, []
    try:
        for batch, features in batch_tuning.forward_batches(extract, batches, candidates,
                                                            "Bottlenecks", forward_streams):
            for index, vector, error in zip(batch.indices, features, batch.errors):
                image = image_files[index]
                if error is None:
                    vectors[image.content_key] = vector
                    writer.add(image.content_key, vector)
                else:
                    failed.append(dataset.SkippedFile(image.path, error))
                    logging.warning("Skipping %s: %s", dataset.display_path(image.path), error)
            progress.update(len(features))
    finally:
        writer.flush()  # Whatever was computed before an error or Ctrl-C is kept.
    return vectors, failed


def make_extractor(layer, module, batch_size, strategy):
    """The module's forward pass on one batch, on every device of `strategy`.

    Returns:
      A function: uint8 pixels, or float32 in [0, 1], [n, H, W, 3] with n <= batch_size ->
      float32 numpy array [n, D], row i belonging to image i.
    """
    if strategy.num_replicas_in_sync == 1:
        forward = pixel_forward(layer)
        return lambda batch: forward(batch).numpy()
    with strategy.scope():
        # Loaded in the scope, the module's variables are mirrored: copied to each device once.
        mirrored = hub.KerasLayer(module.saved_model_dir, trainable=False)
    # One graph runs every device's share at once (strategy.run inside tf.function).
    forward = tf.function(lambda slices: strategy.run(
        lambda batch: mirrored(preprocess.as_unit_float(batch), training=False), args=(slices,)))
    return functools.partial(_extract_mirrored, forward, strategy, batch_size)


def pixel_forward(layer):
    """The module's forward pass, a function of uint8 or float32 images [n, H, W, 3].

    8-bit pixels become float32 inside TensorFlow, after they reach it: a quarter of the bytes
    to hand over. The Beam workers use this very function, so both write the same vectors.

    It calls the module eagerly: a loaded module is already a graph function, and wrapping it
    in a tf.function of its own made TensorFlow optimize the whole network again on its first
    call (0.5 s in a fresh process here, 5% of a 1000-image lite0 job) with no faster steady
    state.
    """
    return lambda batch: layer(preprocess.as_unit_float(batch), training=False)


def _extract_mirrored(forward, strategy, batch_size, batch):
    """Splits the batch into consecutive equal slices, one per device, and joins the results."""
    count = int(batch.shape[0])
    share = -(-batch_size // strategy.num_replicas_in_sync)  # ceil
    # Every batch, the last one too, is padded to the same shape, so each device traces once.
    padded = tf.pad(batch, [[0, share * strategy.num_replicas_in_sync - count], [0, 0], [0, 0],
                            [0, 0]])
    slices = strategy.experimental_distribute_values_from_function(
        lambda context: padded[context.replica_id_in_sync_group * share:][:share])
    outputs = forward(slices)
    parts = [part.numpy() for part in strategy.experimental_local_results(outputs)]
    return np.concatenate(parts)[:count]
