"""The TensorFlow half of preprocessing, shared by training, export and label_image.

Whatever decoded the image, this is the one function that turns it into what a TF Hub
image module expects, so training and serving cannot drift apart.
"""

import numpy as np
import tensorflow as tf

from retrain import images


def resize_for_module(image, image_size):
    """Resizes a decoded image to the module's input.

    Args:
      image: uint8 tensor [height, width, 3] (any size).
      image_size: (height, width) the module expects.

    Returns:
      float32 tensor [image_size[0], image_size[1], 3] with values in [0, 1].
    """
    image = tf.image.convert_image_dtype(image, tf.float32)
    # Antialiasing keeps large photos from aliasing when shrunk several times.
    resized = tf.image.resize(image, image_size, method="bilinear", antialias=True)
    return tf.clip_by_value(resized, 0.0, 1.0)


def decode_and_resize(image_bytes, image_size):
    """Decodes one encoded image (JPEG, PNG, GIF, BMP, WebP) with TensorFlow and resizes it.

    Used by the exported model's bytes signature. Unlike the Pillow path used in training,
    TensorFlow's decoders ignore EXIF orientation and drop an alpha channel.

    Args:
      image_bytes: scalar tf.string.
      image_size: (height, width).

    Returns:
      float32 tensor [height, width, 3] in [0, 1].
    """
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return resize_for_module(image, image_size)


def image_batches(paths, image_size, batch_size, max_pixels, errors, distortions=None,
                  seeds=None):
    """A tf.data pipeline that reads, decodes and resizes image files in parallel.

    Decoding uses Pillow (retrain.images) in tf.data's worker threads; an unreadable file
    yields a blank image with ok=False and its reason in `errors[index]`, so one bad file
    never stops the pipeline.

    With `distortions` (augment.Distortions) and `seeds` (int64 [len(paths), 2]), image i
    becomes the variant augment.distort_and_resize makes with seeds[i] instead.

    Yields:
      (index int64 [batch], images float32 [batch, H, W, 3] in [0, 1], ok bool [batch]).
    """
    def read(index):
        index = int(index)
        try:
            return images.read_image_file(paths[index], max_pixels), True
        except images.ImageReadError as error:
            errors[index] = str(error)
            return np.zeros([1, 1, 3], np.uint8), False

    transform = _distorting_transform(image_size, distortions, seeds, len(paths))

    def load(index):
        image, ok = tf.numpy_function(read, [index], [tf.uint8, tf.bool], stateful=False)
        image.set_shape([None, None, 3])
        ok.set_shape([])
        return index, transform(index, image), ok

    pipeline = tf.data.Dataset.range(len(paths))
    pipeline = pipeline.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return pipeline.batch(batch_size).prefetch(2)


def _distorting_transform(image_size, distortions, seeds, count):
    """(index, uint8 image) -> float32 module input: resized, and distorted if asked."""
    if distortions is None:
        return lambda index, image: resize_for_module(image, image_size)
    # Imported here: augment builds on this module's resize_for_module.
    from retrain import augment  # pylint: disable=import-outside-toplevel
    seed_table = tf.constant(np.asarray(seeds, np.int64).reshape([count, 2]))
    return lambda index, image: augment.distort_and_resize(
        image, image_size, distortions, tf.gather(seed_table, index))
