"""Turning image files into what a TF Hub image module expects: float32 [H, W, 3] in [0, 1].

Training (bottlenecks) and label_image read files through one reader, pixel_batches:
Pillow decodes (a large JPEG at a fraction of its size) and resizes with an antialiased
bilinear filter on 8-bit pixels, in worker threads, ahead of the network (without a GPU at
idle CPU priority, in the moments the network leaves a core idle). Fine-tuning, which needs a
tf.data pipeline, reads through image_batches, which calls the same read_for_module per file.

The exported model's bytes signature cannot call Pillow: it decodes and resizes with
TensorFlow (decode_and_resize), the same filter in float32, which agrees with the Pillow path
to one level in 255 for a PNG. Distortions (augment) also resize with TensorFlow
(resize_for_module).
"""

import collections
import concurrent.futures
import dataclasses
import functools
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from retrain.data import images
# TF-free (Pillow only), in images so label_image's TensorFlow-free path reads the same pixels;
# imported here under their old names, which training and the tests use.
from retrain.data.images import read_for_module  # pylint: disable=unused-import
from retrain.data.images import resize_pixels  # pylint: disable=unused-import
from retrain.runtime import devices


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


@dataclasses.dataclass
class PixelBatch:
    """Consecutive images of a pixel_batches run, resized for the module, 8-bit."""

    indices: np.ndarray  # int64 [n]: each image's position in the paths read
    # uint8 [n, H, W, 3] (from distorted_batches: float32 in [0, 1]); zeros for an image that
    # could not be read.
    pixels: object
    errors: list  # [str or None]: why image i could not be read, None if it was

    @property
    def ok(self):
        """bool [n]: whether image i was read."""
        return np.array([error is None for error in self.errors], dtype=bool)


# Images one reader task decodes: small enough that a batch is shared among many threads
# (a GPU batch of 512 would otherwise sit on one core), large enough that the Python
# bookkeeping per task stays negligible next to decoding.
_READ_CHUNK = 8

# Images the readers may be ahead of the network. Readers at idle priority (see
# readers_yield_to_network) only run when a core would otherwise be idle, so they need work
# queued for every such moment, not only right after the network takes a batch: 64 images
# (10 MB at 224x224) made the bottleneck stage 7% faster on 2 cores than 12 (a probe timing
# both against the bare forward pass, efficientnet_lite0 at batch 4).
_READ_AHEAD_IMAGES = 64

# How long the network waits for an idle-priority reader before checking whether the
# readers get any CPU at all (see _Readers.wait).
_STARVED_READER_SECONDS = 1.0


def reader_threads():
    """Threads that decode images: one per core this process may use.

    On a CPU-only machine the network keeps every core busy and the readers only fill the
    gaps; with a GPU they are what keeps it fed.
    """
    return devices.usable_cores()


def readers_yield_to_network():
    """Whether reader threads run at the lowest CPU priority (Linux's SCHED_IDLE).

    Without a GPU the network's threads are busy but for short gaps (10-15% of the time on
    2 cores, between and inside its operations). Readers at normal priority take turns with
    the network's threads and slow it down by about the time they read; at idle priority
    they only get the gaps, which are more than enough for them. With a GPU the readers are
    what keeps it fed, so they keep normal priority.
    """
    return hasattr(os, "SCHED_IDLE") and not tf.config.list_physical_devices("GPU")


def pixel_batches(paths, image_size, batch_size, max_pixels, threads=None, low_priority=None):
    """Reads image files with read_for_module in worker threads, ahead of the network.

    Plain Python threads, not tf.data: Pillow releases the GIL while it decodes and resizes,
    and a batch is decoded in chunks straight into its array, which costs measurably less
    CPU per image than a tf.data map (scripts/benchmark.py). That matters on a CPU-only
    machine, where every cycle the reader takes is one the network does not get.

    Args:
      paths: image files.
      image_size: (height, width) the module expects.
      batch_size: images per batch (the last batch may be smaller).
      max_pixels: larger images are not decoded (see images.decode_image).
      threads: reader threads (None: reader_threads()).
      low_priority: readers at idle CPU priority (None: readers_yield_to_network()). If
        other programs then keep them from running at all, reading goes on at normal
        priority, with a warning.

    Yields:
      PixelBatch for paths[0:batch_size], paths[batch_size:2 * batch_size], ..., in order.
      An unreadable file never stops the reader: its batch carries the reason.
    """
    threads = threads or reader_threads()
    if low_priority is None:
        low_priority = readers_yield_to_network()
    chunks_per_batch = -(-min(batch_size, len(paths) or 1) // _READ_CHUNK)
    # Every thread has a chunk to read and one more batch waits, or _READ_AHEAD_IMAGES.
    batches_ahead = max(-(-threads // chunks_per_batch) + 1, _READ_AHEAD_IMAGES // batch_size)
    starts = iter(range(0, len(paths), batch_size))
    read_chunk = functools.partial(_read_chunk, paths, image_size, max_pixels)
    readers = _Readers(threads, low_priority)
    in_flight = collections.deque()

    def submit_next_batch():
        start = next(starts, None)
        if start is None:
            return
        indices = np.arange(start, min(start + batch_size, len(paths)), dtype=np.int64)
        batch = PixelBatch(indices, np.empty([len(indices), *image_size, 3], np.uint8),
                           [None] * len(indices))
        chunks = [(first, min(first + _READ_CHUNK, len(indices)))
                  for first in range(0, len(indices), _READ_CHUNK)]
        in_flight.append((batch, [(readers.submit(read_chunk, batch, *chunk), chunk)
                                  for chunk in chunks]))

    try:
        for _ in range(batches_ahead):
            submit_next_batch()
        while in_flight:
            batch, tasks = in_flight.popleft()
            submit_next_batch()
            yield _finish(batch, tasks, readers, read_chunk)
    finally:
        # Stopped early (an error, Ctrl-C, a consumer that has enough): no more reading.
        readers.shutdown()


def _finish(batch, tasks, readers, read_chunk):
    """batch once every chunk is read: by the readers, or here if they cannot get the CPU.

    A chunk taken over is read into a copy of the batch, which the reader left behind can
    no longer write to.
    """
    taken_over = False
    for task, (first, stop) in tasks:
        finished = readers.wait(task)
        if finished and not taken_over:
            continue
        if not taken_over:
            batch = PixelBatch(batch.indices, batch.pixels.copy(), list(batch.errors))
            taken_over = True
        if finished:  # Its rows were written to the batch left behind: copy them over.
            old_pixels, old_errors = task[1].result()
            batch.pixels[first:stop] = old_pixels[first:stop]
            batch.errors[first:stop] = old_errors[first:stop]
        else:
            read_chunk(batch, first, stop)
    return batch


class _Readers:
    """The reader threads: at idle priority until they turn out to get no CPU at all."""

    def __init__(self, threads, low_priority):
        self.threads = threads
        self.low_priority = low_priority
        self.pool = self._new_pool()

    def _new_pool(self):
        initializer = _lower_thread_priority if self.low_priority else None
        # Worker threads start on the first submit()s, from the consumer's thread, whose
        # priority they inherit before the initializer lowers it.
        return concurrent.futures.ThreadPoolExecutor(self.threads, "retrain-reader",
                                                     initializer=initializer)

    def submit(self, *args):
        """Starts a reader task; returns what wait() takes."""
        return self.pool, self.pool.submit(*args)

    def wait(self, task):
        """Waits for a task from submit(). False if it will not finish: it was cancelled, or
        idle readers get no CPU (after which every reader runs at normal priority)."""
        pool, future = task
        if pool is not self.pool:  # Left behind, starved: only a chunk already read counts.
            return future.done() and not future.cancelled()
        while True:
            start = time.process_time()
            try:
                future.result(timeout=_STARVED_READER_SECONDS if self.low_priority else None)
                return True
            except concurrent.futures.CancelledError:
                return False
            except concurrent.futures.TimeoutError:
                # While the network waits, this process's CPU time stands still only if no
                # reader gets to run: other programs keep every core busy. A reader merely
                # slow with a large image keeps a core busy, and is waited for.
                if time.process_time() - start < 0.5 * _STARVED_READER_SECONDS:
                    self._continue_at_normal_priority()
                    return False

    def _continue_at_normal_priority(self):
        logging.warning("Image readers at idle priority got no CPU for %.0f s: other programs "
                        "keep it busy. Reading on at normal priority.", _STARVED_READER_SECONDS)
        # Its queued chunks are cancelled; _finish reads them (and the starved ones) itself.
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.low_priority = False
        self.pool = self._new_pool()

    def shutdown(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def _lower_thread_priority():
    """Runs the calling thread (and only it, on Linux) at idle priority."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:  # Not allowed here (a locked-down container): normal priority it is.
        pass


def _read_chunk(paths, image_size, max_pixels, batch, first, stop):
    """Reads batch's images first..stop-1 into batch.pixels, recording failures in batch.errors.

    Returns (pixels, errors) of the batch it wrote to.
    """
    for row in range(first, stop):
        try:
            batch.pixels[row] = read_for_module(paths[batch.indices[row]], image_size, max_pixels)
        except images.ImageReadError as error:
            batch.pixels[row] = 0
            batch.errors[row] = str(error)
    return batch.pixels, batch.errors


def as_unit_float(pixels):
    """uint8 pixels (array or tensor, any shape) -> float32 tensor in [0, 1]; float32 passes."""
    return tf.image.convert_image_dtype(pixels, tf.float32)


def image_batches(paths, image_size, batch_size, max_pixels, errors, transform=None):
    """A tf.data pipeline that reads, decodes and resizes image files in parallel.

    For consumers that need a tf.data.Dataset (fine-tuning maps labels onto it); loops over
    batches use pixel_batches, which is cheaper. Each file is read by read_for_module (Pillow)
    in one of tf.data's worker threads, and batches stay 8-bit until the last step; an
    unreadable file yields a blank image with ok=False and its reason in `errors[index]`, so
    one bad file never stops the pipeline.

    With `transform`, a function (index int64, uint8 image [h, w, 3] at its full size) ->
    float32 [H, W, 3] in [0, 1], each image is decoded at full size and transformed instead
    of resized (data.distort.variant_transform makes the distorted variants so).

    Yields:
      (index int64 [batch], images float32 [batch, H, W, 3] in [0, 1], ok bool [batch]).
    """
    height, width = image_size
    if transform is None:
        read_file = functools.partial(read_for_module, image_size=image_size, max_pixels=max_pixels)
        shape = [height, width, 3]
    else:
        read_file = functools.partial(images.read_image_file, max_pixels=max_pixels)
        shape = [None, None, 3]

    def read(index):
        index = int(index)
        try:
            return read_file(paths[index]), True
        except images.ImageReadError as error:
            errors[index] = str(error)
            return np.zeros([height, width, 3], np.uint8), False

    def load(index):
        image, ok = tf.numpy_function(read, [index], [tf.uint8, tf.bool], stateful=False)
        image, ok = tf.ensure_shape(image, shape), tf.ensure_shape(ok, [])
        return index, transform(index, image) if transform else image, ok

    pipeline = tf.data.Dataset.range(len(paths))
    pipeline = pipeline.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    pipeline = pipeline.batch(batch_size)
    if transform is None:
        # Converted once per batch: 8-bit pixels are a quarter of the bytes to move until here.
        pipeline = pipeline.map(lambda indices, batch, ok: (indices, as_unit_float(batch), ok))
    return pipeline.prefetch(2)
