"""Labelling images with a model that retrain exported.

Everything needed (labels, input size, the module and the new layer) comes from the
SavedModel, and images go through the same decode and resize as in training.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from retrain.data import dataset
from retrain.data import images
from retrain.data import preprocess
from retrain.errors import UserError
from retrain.export import saved_model
from retrain.predict import model_files
from retrain.runtime import batch_tuning


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
    model_files.check_saved_model_dir(saved_model_dir)
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
    if version > saved_model.EXPORT_FORMAT_VERSION:
        raise UserError(f"The SavedModel at {saved_model_dir!r} was made by a newer retrain (format "
                        f"{version}); upgrade retrain to label with it.")
    labels = [os.fsdecode(label) for label in model.labels.numpy()]
    return Classifier(model, labels, tuple(int(value) for value in model.image_size.numpy()))


def find_image_files(image_dir):
    """All files under image_dir that retrain would consider (data.dataset's walker: symlinks
    followed, hidden and system files left out), sorted; images are told apart later."""
    if not os.path.isdir(image_dir):
        raise UserError(f"--image_dir {image_dir!r} is not a folder; pass a folder of images.")
    return dataset.list_files(image_dir)


def classify_files(classifier, paths, batch_size=None, max_pixels=images.DEFAULT_MAX_PIXELS,
                   forward_streams=None):
    """Yields a Prediction per path, in order; unreadable files carry an error instead.

    Files are read, decoded and resized by the reader that computes bottlenecks in training
    (preprocess.pixel_batches), in worker threads ahead of the model.
    batch_size None: batch_tuning's choice among its candidates for this many files.
    forward_streams: batches run through the model at once (streams.ordered_map); None:
    devices.forward_streams().
    """
    candidates = batch_tuning.batch_size_candidates(batch_size, len(paths))
    batches = preprocess.pixel_batches(paths, classifier.image_size, max(candidates), max_pixels)

    def predict(pixels):
        return classifier.predict(preprocess.as_unit_float(pixels))

    for batch, probabilities in batch_tuning.forward_batches(predict, batches, candidates,
                                                             "label_image", forward_streams):
        for index, row, error in zip(batch.indices, probabilities, batch.errors):
            if error is None:
                yield Prediction(paths[index], probabilities=row)
            else:
                yield Prediction(paths[index], error=error)


def top_predictions(prediction, labels, count):
    """[(label, score)] for the `count` most likely labels, highest first."""
    order = np.argsort(-prediction.probabilities, kind="stable")[:count]
    return [(labels[index], float(prediction.probabilities[index])) for index in order]


