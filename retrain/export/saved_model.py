"""Exporting the classifier: a SavedModel (module + new layer + labels) and a labels file.

Both are written to a temporary name beside the target and renamed into place, so a run
killed during export never leaves a half-written model or labels file at the output path.
"""

import contextlib
import json
import math
import os
import shutil

from absl import logging
import tensorflow as tf

from retrain.data import preprocess
from retrain.export import layout
from retrain.runtime import files

# Bumped when the exported model's attributes or signatures change; label_image checks it.
# 2: temperature-calibrated prediction, unknown_score, top_classes/top_scores, serving_numeric,
#    a numbered version folder for TF Serving. label_image still reads 1.
EXPORT_FORMAT_VERSION = 2
DEFAULT_VERSION = layout.DEFAULT_VERSION
# top_classes / top_scores hold this many classes (fewer when the model has fewer).
TOP_CLASSES = 5
# The files of a SavedModel at its top level (left over from a format-1 export there).
_SAVED_MODEL_ENTRIES = ("saved_model.pb", "saved_model.pbtxt", "fingerprint.pb", "variables",
                        "assets")


class RetrainedClassifier(tf.Module):
    """The exported model.

    Signatures (B images, C classes, K = min(TOP_CLASSES, C)):
      serving_default(image: float32 [B, H, W, 3] in [0, 1]) -> {
          "prediction": float32 [B, C], softmax(logits / temperature),
          "unknown_score": float32 [B], higher = farther from the training images,
          "top_classes": string [B, K], class names, most likely first,
          "top_scores": float32 [B, K], their probabilities}
      serving_bytes(image_bytes: string [B]) -> the same; decodes JPEG/PNG/GIF/BMP/WebP with
        TensorFlow and resizes exactly as training did.
      serving_numeric(image: float32 [B, H, W, 3]) -> {"prediction", "unknown_score"}: no
        strings, for converters (TFLite, ONNX).
    Attributes: labels (string [C], the output order), image_size (int32 [2]: height, width),
      retrain_format_version (int32), temperature (float32), unknown_threshold (float32: an
      image is unknown when unknown_score > it; inf: never), unknown_known_share (float32: the
      share of validation images the threshold kept known), unknown_method (string).
    """

    def __init__(self, feature_extractor, head, labels, image_size, temperature=1.0,
                 detector=None):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.head_weights = tf.Variable(head.weights, trainable=False, name="final_weights")
        self.head_biases = tf.Variable(head.biases, trainable=False, name="final_biases")
        self.labels = tf.Variable([os.fsencode(label) for label in labels], trainable=False)
        self.image_size = tf.Variable(list(image_size), dtype=tf.int32, trainable=False)
        self.retrain_format_version = tf.Variable(EXPORT_FORMAT_VERSION, trainable=False)
        self.temperature = tf.Variable(float(temperature), dtype=tf.float32, trainable=False)
        # Without a detector: the max-logit score (nothing to carry) and an infinite threshold,
        # so the outputs are the same and no image is called unknown.
        self._method = detector.method if detector else "max_logit"
        self._k = int(detector.k) if detector else 1
        self.unknown_method = tf.Variable(self._method, trainable=False)
        self.unknown_threshold = tf.Variable(float(detector.threshold) if detector else math.inf,
                                             dtype=tf.float32, trainable=False)
        self.unknown_known_share = tf.Variable(float(detector.known_share) if detector else 0.0,
                                               dtype=tf.float32, trainable=False)
        if detector is not None and detector.bank is not None:
            self.unknown_bank = tf.Variable(detector.bank, dtype=tf.float32, trainable=False)
        if detector is not None and detector.precision_matrix is not None:
            self.unknown_precision = tf.Variable(detector.precision_matrix, dtype=tf.float32,
                                                 trainable=False)
        self._top = min(TOP_CLASSES, len(labels))
        self._size = tuple(int(value) for value in image_size)
        image_spec = tf.TensorSpec([None, *self._size, 3], tf.float32, name="image")
        self.classify_images = tf.function(self._classify_images, input_signature=[image_spec])
        self.classify_numeric = tf.function(self._classify_numeric, input_signature=[image_spec])
        self.classify_image_bytes = tf.function(
            self._classify_image_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])

    def _classify_numeric(self, image):
        features = self.feature_extractor(image, training=False)
        logits = tf.matmul(features, self.head_weights) + self.head_biases
        return {"prediction": tf.nn.softmax(logits / self.temperature, name="final_result"),
                "unknown_score": self._unknown_score(features, logits)}

    def _classify_images(self, image):
        outputs = self._classify_numeric(image)
        top = tf.math.top_k(outputs["prediction"], k=self._top)
        outputs["top_classes"] = tf.gather(self.labels, top.indices)
        outputs["top_scores"] = top.values
        return outputs

    def _classify_image_bytes(self, image_bytes):
        images = tf.map_fn(lambda data: preprocess.decode_and_resize(data, self._size), image_bytes,
                           fn_output_signature=tf.TensorSpec([*self._size, 3], tf.float32))
        return self._classify_images(images)

    def _unknown_score(self, features, logits):
        """float32 [B]: training.novelty's score of self._method, in TensorFlow."""
        if self._method == "knn":
            similarities = tf.matmul(tf.math.l2_normalize(features, axis=1), self.unknown_bank,
                                     transpose_b=True)
            if self._k == 1:
                return 1.0 - tf.reduce_max(similarities, axis=1)
            return 1.0 - tf.math.top_k(similarities, k=self._k).values[:, -1]
        if self._method == "mahalanobis":
            projected = tf.matmul(features, self.unknown_precision)
            own = tf.reduce_sum(projected * features, axis=1, keepdims=True)
            cross = tf.matmul(projected, self.unknown_bank, transpose_b=True)
            mean_terms = tf.reduce_sum(
                tf.matmul(self.unknown_bank, self.unknown_precision) * self.unknown_bank, axis=1)
            return tf.reduce_min(own - 2.0 * cross + mean_terms, axis=1)
        if self._method == "max_logit":
            # -max(logits) as min of the logits of the negated layer: the same number, and
            # TFLite has no integer kernel for negating a tensor (a full-int8 model needs one).
            negated = tf.matmul(features, -self.head_weights) - self.head_biases
            return tf.reduce_min(negated, axis=1)
        if self._method == "energy":
            return -tf.reduce_logsumexp(logits, axis=1)
        if self._method == "msp":
            return 1.0 - tf.reduce_max(tf.nn.softmax(logits / self.temperature), axis=1)
        raise ValueError(f"Unknown method {self._method!r}.")


version_dir = layout.version_dir


def export_saved_model(feature_extractor, head, labels, image_size, saved_model_dir,
                       temperature=1.0, detector=None, version=DEFAULT_VERSION):
    """Writes the classifier SavedModel to version_dir(saved_model_dir, version), replacing
    what was there; returns that folder.

    temperature: divides the logits (training.calibration); detector: a
    training.novelty.UnknownDetector, or None for an export that never says unknown.
    """
    classifier = RetrainedClassifier(feature_extractor, head, labels, image_size, temperature,
                                     detector)
    target = version_dir(saved_model_dir, version)
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    files.remove_stale_temporaries(target)
    temporary = files.temporary_sibling(target)
    try:
        with _quiet_absl_logging():
            tf.saved_model.save(classifier, temporary, signatures={
                "serving_default": classifier.classify_images,
                "serving_bytes": classifier.classify_image_bytes,
                "serving_numeric": classifier.classify_numeric,
            })
        files.replace_directory(temporary, target)
        if version:
            _remove_unversioned_export(saved_model_dir)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        # A full disk surfaces as OSError or as a TensorFlow file error.
        if isinstance(error, (OSError, tf.errors.OpError)):
            raise files.write_error(parent, "--saved_model_dir", error, what="the model") from error
        raise
    logging.info("Saved the retrained model to %s", target)
    return target


def _remove_unversioned_export(saved_model_dir):
    """Removes a format-1 SavedModel written directly in saved_model_dir by an older retrain,
    which label_image would otherwise read instead of the new version folder."""
    for name in _SAVED_MODEL_ENTRIES:
        path = os.path.join(saved_model_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)


def write_calibration(path, temperature, detector):
    """Writes the sidecar JSON of a .tflite/.onnx file: {"unknown_threshold": float or null,
    "temperature", "known_share", "unknown_method"} (format docs/export-formats.md)."""
    threshold = detector.threshold if detector and math.isfinite(detector.threshold) else None
    record = {"unknown_threshold": threshold, "temperature": float(temperature),
              "known_share": detector.known_share if detector else None,
              "unknown_method": detector.method if detector else None}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    files.write_file_atomically(path, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    return path


@contextlib.contextmanager
def _quiet_absl_logging():
    """Hides the INFO lines TensorFlow and tf_keras log while saving (traced functions, shards)."""
    previous = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        logging.set_verbosity(previous)


def write_labels(labels, path):
    """Writes one label per line; line i is output index i (retrain.py's labels file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = b"".join(os.fsencode(label) + b"\n" for label in labels)
    files.write_file_atomically(path, data, flag="--output_labels")
    logging.info("Saved the labels to %s", path)
