"""Exporting the classifier: a SavedModel (module + new layer + labels) and a labels file.

Both are written to a temporary name beside the target and renamed into place, so a run
killed during export never leaves a half-written model or labels file at the output path.
"""

import contextlib
import os
import shutil

from absl import logging
import tensorflow as tf

from retrain.data import preprocess
from retrain.runtime import files

# Bumped when the exported model's attributes or signatures change; label_image checks it.
EXPORT_FORMAT_VERSION = 1


class RetrainedClassifier(tf.Module):
    """The exported model.

    Signatures:
      serving_default(image: float32 [batch, H, W, 3] in [0, 1]) -> {"prediction": float32 [batch, C]}
      serving_bytes(image_bytes: string [batch]) -> {"prediction": float32 [batch, C]}; decodes
        JPEG/PNG/GIF/BMP/WebP with TensorFlow and resizes exactly as training did.
    Attributes: labels (string [C], the output order), image_size (int32 [2]: height, width),
      retrain_format_version (int32).
    """

    def __init__(self, feature_extractor, head, labels, image_size):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.head_weights = tf.Variable(head.weights, trainable=False, name="final_weights")
        self.head_biases = tf.Variable(head.biases, trainable=False, name="final_biases")
        self.labels = tf.Variable([os.fsencode(label) for label in labels], trainable=False)
        self.image_size = tf.Variable(list(image_size), dtype=tf.int32, trainable=False)
        self.retrain_format_version = tf.Variable(EXPORT_FORMAT_VERSION, trainable=False)
        self._size = tuple(int(value) for value in image_size)
        self.classify_images = tf.function(
            self._classify_images,
            input_signature=[tf.TensorSpec([None, *self._size, 3], tf.float32, name="image")])
        self.classify_image_bytes = tf.function(
            self._classify_image_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])

    def _classify_images(self, image):
        features = self.feature_extractor(image, training=False)
        logits = tf.matmul(features, self.head_weights) + self.head_biases
        return {"prediction": tf.nn.softmax(logits, name="final_result")}

    def _classify_image_bytes(self, image_bytes):
        images = tf.map_fn(lambda data: preprocess.decode_and_resize(data, self._size), image_bytes,
                           fn_output_signature=tf.TensorSpec([*self._size, 3], tf.float32))
        return self._classify_images(images)


def export_saved_model(feature_extractor, head, labels, image_size, saved_model_dir):
    """Writes the classifier SavedModel to saved_model_dir (replacing what was there)."""
    classifier = RetrainedClassifier(feature_extractor, head, labels, image_size)
    parent = os.path.dirname(os.path.abspath(saved_model_dir))
    os.makedirs(parent, exist_ok=True)
    files.remove_stale_temporaries(saved_model_dir)
    temporary = files.temporary_sibling(saved_model_dir)
    try:
        with _quiet_absl_logging():
            tf.saved_model.save(classifier, temporary, signatures={
                "serving_default": classifier.classify_images,
                "serving_bytes": classifier.classify_image_bytes,
            })
        files.replace_directory(temporary, saved_model_dir)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        # A full disk surfaces as OSError or as a TensorFlow file error.
        if isinstance(error, (OSError, tf.errors.OpError)):
            raise files.write_error(parent, "--saved_model_dir", error, what="the model") from error
        raise
    logging.info("Saved the retrained model to %s", saved_model_dir)


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
