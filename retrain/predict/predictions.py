"""Predictions without TensorFlow: the record label_image prints, its top classes, and the
loop that labels files with a .tflite or .onnx model when TensorFlow is not imported.

Imports numpy, Pillow and retrain's TF-free modules only: `label_image --tflite_model` and
`--onnx_model` run through here, so they start in a fraction of a second and run where only
requirements-light.txt is installed. Images are read by data.images.read_for_module, the
reader training uses, and scaled to [0, 1] by images.as_unit_float, bit for bit what
TensorFlow's convert_image_dtype gives: the model sees the pixels it sees on the TensorFlow
path (predict/label_image.classify_files).
"""

import concurrent.futures
import dataclasses
import os

import numpy as np

from retrain.data import images

# Images per forward pass on this path when --batch_size is not given: batch_tuning's timing
# needs TensorFlow; for an interpreter on a CPU, 32 is within a few percent of the best.
DEFAULT_BATCH_SIZE = 32


@dataclasses.dataclass
class Prediction:
    path: str
    probabilities: np.ndarray = None  # float32 [num_labels], or None if the image failed
    error: str = None
    unknown_score: float = None  # None: the model has no unknown score
    unknown: bool = None  # unknown_score > the threshold; None without a score


def top_predictions(prediction, labels, count):
    """[(label, score)] for the `count` most likely labels, highest first."""
    order = np.argsort(-prediction.probabilities, kind="stable")[:count]
    return [(labels[index], float(prediction.probabilities[index])) for index in order]


def classify_files(classifier, paths, batch_size=None, max_pixels=images.DEFAULT_MAX_PIXELS,
                   unknown_threshold=None):
    """Yields a Prediction per path, in order; unreadable files carry an error instead.

    The TensorFlow-free twin of label_image.classify_files: the same reader and scaling, so
    the same numbers reach the model; images are read by a thread per core, one batch ahead.

    Args:
      classifier: has image_size (height, width) and predict(float32 [B, H, W, 3] in [0, 1])
        -> float32 [B, C]; optionally predict_with_unknown (-> (probabilities, scores [B] or
        None)) and unknown_threshold.
      batch_size: images per forward pass; None: DEFAULT_BATCH_SIZE.
      unknown_threshold: overrides the classifier's threshold.
    """
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    threshold = (float(unknown_threshold) if unknown_threshold is not None
                 else getattr(classifier, "unknown_threshold", None))
    starts = range(0, len(paths), batch_size)
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        def read(start):
            return [pool.submit(_read, path, classifier.image_size, max_pixels)
                    for path in paths[start:start + batch_size]]
        pending = read(starts[0]) if starts else []
        for start in starts:
            batch = [future.result() for future in pending]
            # The next batch is read while this one runs through the model.
            pending = read(start + batch_size) if start + batch_size < len(paths) else []
            yield from _predict_batch(classifier, paths[start:start + batch_size], batch,
                                      threshold)


def _read(path, image_size, max_pixels):
    """(uint8 [H, W, 3], None), or (None, why the file cannot be read)."""
    try:
        return images.read_for_module(path, image_size, max_pixels), None
    except images.ImageReadError as error:
        return None, str(error)


def _predict_batch(classifier, paths, batch, threshold):
    readable = [pixels for pixels, error in batch if error is None]
    if readable:
        unit = images.as_unit_float(np.stack(readable))
        if hasattr(classifier, "predict_with_unknown"):
            probabilities, scores = classifier.predict_with_unknown(unit)
        else:
            probabilities, scores = classifier.predict(unit), None
    row = 0
    for path, (_, error) in zip(paths, batch):
        if error is not None:
            yield Prediction(path, error=error)
            continue
        prediction = Prediction(path, probabilities=probabilities[row])
        if scores is not None:
            prediction.unknown_score = float(scores[row])
            prediction.unknown = (bool(prediction.unknown_score > threshold)
                                  if threshold is not None else None)
        row += 1
        yield prediction
