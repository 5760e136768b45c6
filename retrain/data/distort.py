"""Random distortions of training images: retrain.py's four, made repeatable.

retrain.py drew a fresh distortion of every image at every step, so it had to run the whole
network per image per step (hours instead of minutes). Here a distortion is a pure function
of (image, seed): the same seed gives the same variant, so a fixed number of variants per image
can be computed once through the batched pipeline and cached like ordinary bottlenecks, and a
resumed run sees exactly the variants an uninterrupted one would.

The distortions are retrain.py's (`add_input_distortions`), in its order and with its meaning:
  random_crop:       percent margin around the crop: the image is resized to (1 + crop/100)
                     times the input size and a random input-sized window is cut out of it.
  random_scale:      percent: the margin is further scaled by a random factor in
                     [1, 1 + scale/100] (a larger image, so a tighter crop).
  flip_left_right:   mirror half of the variants horizontally: copies 0, 2, 4, ... of each
                     image (a coin per copy could leave all of an image's copies unmirrored).
  random_brightness: percent: multiply pixel values by a random factor in
                     [1 - brightness/100, 1 + brightness/100] (clipped to [0, 1]).
"""

import hashlib

import numpy as np
import tensorflow as tf

from retrain.data import preprocess


def variant_key(content_key, distortions, copy_index):
    """The cache key of one distorted variant (20 bytes, like an image's content key).

    It names the image's content, the distortion settings and the copy number, so changing
    a setting computes new variants instead of reusing ones made with the old settings.
    The lowest bit of the first byte is 1 for copies 0, 2, 4, ...: with flip_left_right,
    those are the mirrored ones (see distort_and_resize).
    """
    text = f"|augment-v2|{distortions.describe()}|copy={copy_index}".encode()
    key = bytearray(hashlib.sha1(content_key + text).digest())
    key[0] = (key[0] & 0xFE) | (copy_index % 2 == 0)
    return bytes(key)


def variant_seed(key):
    """int64 [2]: the stateless seed that makes the variant cached under `key` (variant_key).

    Little-endian, so seed[0] is odd exactly when variant_key marked the copy as mirrored.
    """
    return np.frombuffer(key[:16], dtype="<i8").copy()


def distort_and_resize(image, image_size, distortions, seed):
    """One random variant of a decoded image, resized for the module.

    Args:
      image: uint8 tensor [height, width, 3] (any size).
      image_size: (height, width) the module expects.
      distortions: Distortions.
      seed: int64 tensor [2]; the same seed always gives the same variant. With
        flip_left_right, an odd seed[0] mirrors the image (variant_seed makes it so for half
        of the copies); the other distortions are drawn from the whole seed.

    Returns:
      float32 tensor [image_size[0], image_size[1], 3] in [0, 1].
    """
    seed = tf.convert_to_tensor(seed, tf.int64)
    crop_seed, scale_seed, brightness_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3))
    height, width = image_size
    if distortions.random_crop or distortions.random_scale:
        scale = (1.0 + distortions.random_crop / 100.0) * tf.random.stateless_uniform(
            [], scale_seed, minval=1.0, maxval=1.0 + distortions.random_scale / 100.0)
        precrop_size = tf.cast(tf.math.ceil(scale * tf.constant([height, width], tf.float32)),
                               tf.int32)
        resized = preprocess.resize_for_module(image, precrop_size)
        resized = tf.image.stateless_random_crop(resized, [height, width, 3], crop_seed)
    else:
        resized = preprocess.resize_for_module(image, image_size)
    if distortions.flip_left_right:
        mirrored = tf.equal(tf.bitwise.bitwise_and(seed[0], 1), 1)
        resized = tf.where(mirrored, tf.image.flip_left_right(resized), resized)
    if distortions.random_brightness:
        spread = distortions.random_brightness / 100.0
        factor = tf.random.stateless_uniform([], brightness_seed, minval=1.0 - spread,
                                             maxval=1.0 + spread)
        resized = tf.clip_by_value(resized * factor, 0.0, 1.0)
    return tf.ensure_shape(resized, [height, width, 3])


def distorted_batches(paths, image_size, batch_size, max_pixels, distortions, seeds):
    """preprocess.PixelBatch-es of distorted variants: image i is the variant for seeds[i].

    The distortions run in TensorFlow, so these come from preprocess.image_batches' tf.data
    pipeline; their pixels are float32 in [0, 1].
    """
    errors = {}
    transform = variant_transform(image_size, distortions, seeds, len(paths))
    for indices, pixels, ok in preprocess.image_batches(paths, image_size, batch_size, max_pixels,
                                                        errors, transform):
        indices = indices.numpy()
        yield preprocess.PixelBatch(indices, pixels, [None if read else errors.pop(index)
                                           for index, read in zip(indices, ok.numpy())])


def variant_transform(image_size, distortions, seeds, count):
    """(index, uint8 image) -> float32 [H, W, 3]: the variant of the image for seeds[index],
    for preprocess.image_batches' transform; seeds int64 [count, 2]."""
    seed_table = tf.constant(np.asarray(seeds, np.int64).reshape([count, 2]))
    return lambda index, image: distort_and_resize(
        image, image_size, distortions, tf.gather(seed_table, index))
