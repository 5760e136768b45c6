"""Labelling images with a model that retrain exported.

Everything needed (labels, input size, the module and the new layer) comes from the
SavedModel, and images go through the same decode and resize as in training.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from retrain import export
from retrain import images
from retrain import preprocess
from retrain.errors import UserError


@dataclasses.dataclass
class Classifier:
    model: object  # the loaded RetrainedClassifier
    labels: list
    image_size: tuple  # (height, width)

    def predict(self, batch):
        """float32 [batch, H, W, 3] in [0, 1] -> float32 probabilities [batch, num_labels]."""
        return self.model.classify_images(batch)["prediction"].numpy()


@dataclasses.dataclass
class Prediction:
    path: str
    probabilities: np.ndarray = None  # float32 [num_labels], or None if the image failed
    error: str = None


def load_classifier(saved_model_dir):
    """Loads a SavedModel that retrain exported. Raises UserError for anything else."""
    if not os.path.isdir(saved_model_dir):
        raise UserError(f"--saved_model_dir {saved_model_dir!r} does not exist; pass the "
                        "saved_model folder that retrain wrote (by default retrain_output/saved_model).")
    try:
        model = tf.saved_model.load(saved_model_dir)
    except Exception as error:  # Not a SavedModel: several exception types, depending on what is there.
        raise UserError(f"--saved_model_dir {saved_model_dir!r} is not a SavedModel ({error}); pass "
                        "the saved_model folder that retrain wrote.") from error
    for attribute in ("labels", "image_size", "retrain_format_version", "classify_images"):
        if not hasattr(model, attribute):
            raise UserError(f"The SavedModel at {saved_model_dir!r} was not made by retrain (it has no "
                            f"{attribute!r}); pass a model exported by retrain --saved_model_dir.")
    version = int(model.retrain_format_version.numpy())
    if version > export.EXPORT_FORMAT_VERSION:
        raise UserError(f"The SavedModel at {saved_model_dir!r} was made by a newer retrain (format "
                        f"{version}); upgrade retrain to label with it.")
    labels = [os.fsdecode(label) for label in model.labels.numpy()]
    return Classifier(model, labels, tuple(int(value) for value in model.image_size.numpy()))


def find_image_files(image_dir):
    """All non-hidden files under image_dir, recursively, sorted (images are told apart later)."""
    if not os.path.isdir(image_dir):
        raise UserError(f"--image_dir {image_dir!r} is not a folder; pass a folder of images.")
    found = []
    for root, dir_names, file_names in os.walk(image_dir, followlinks=False):
        dir_names[:] = sorted(name for name in dir_names if not name.startswith("."))
        found.extend(os.path.join(root, name) for name in sorted(file_names)
                     if not name.startswith("."))
    return found


def classify_files(classifier, paths, batch_size=32, max_pixels=images.DEFAULT_MAX_PIXELS):
    """Yields a Prediction per path, in order; unreadable files carry an error instead."""
    errors = {}
    pipeline = preprocess.image_batches(paths, classifier.image_size, batch_size, max_pixels, errors)
    for indices, batch, decoded in pipeline:
        probabilities = classifier.predict(batch)
        for index, row, ok in zip(indices.numpy(), probabilities, decoded.numpy()):
            if ok:
                yield Prediction(paths[index], probabilities=row)
            else:
                yield Prediction(paths[index], error=errors.pop(index))


def top_predictions(prediction, labels, count):
    """[(label, score)] for the `count` most likely labels, highest first."""
    order = np.argsort(-prediction.probabilities, kind="stable")[:count]
    return [(labels[index], float(prediction.probabilities[index])) for index in order]

