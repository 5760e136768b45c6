"""Measure how fast a feature-vector SavedModel computes bottlenecks (for scripts/benchmark.py)."""

import time

import tensorflow as tf


def measure_feature_throughput(saved_model_dir, image_size, batch_size=32, num_batches=4):
    """Returns images per second of `module(images, training=False)` on in-memory images.

    Args:
        saved_model_dir: str, a feature-vector SavedModel (for example from ensure_backbone).
        image_size: (height, width) of its input.
        batch_size: int, images per call.
        num_batches: int, timed calls after one untimed warm-up call (which builds the graph).

    Returns:
        float, images per second over the timed calls (decoding and resizing not included).
    """
    module = tf.saved_model.load(saved_model_dir)
    # Random uniform pixels in [0, 1]: the cost of the convolutions does not depend on content.
    images = tf.random.uniform([batch_size, *image_size, 3], seed=0)
    module(images, training=False).numpy()
    start = time.perf_counter()
    for _ in range(num_batches):
        module(images, training=False).numpy()
    return batch_size * num_batches / (time.perf_counter() - start)
