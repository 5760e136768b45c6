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
from retrain.predict import predictions
from retrain.runtime import batch_tuning


@dataclasses.dataclass
class Classifier:
    model: object  # the loaded RetrainedClassifier
    labels: list
    image_size: tuple  # (height, width)
    # An image is unknown when its unknown score is above this; None: the model has no
    # unknown score (format 1), inf: it never calls an image unknown.
    unknown_threshold: float = None
    temperature: float = 1.0

    def predict(self, batch):
        """float32 [batch, H, W, 3] in [0, 1] -> float32 probabilities [batch, num_labels]."""
        return self.model.classify_images(batch)["prediction"].numpy()

    def predict_with_unknown(self, batch):
        """(probabilities float32 [batch, num_labels], unknown scores float32 [batch] or None
        for a format-1 model)."""
        if self.unknown_threshold is None:
            return self.predict(batch), None
        outputs = self.model.classify_numeric(batch)
        return outputs["prediction"].numpy(), outputs["unknown_score"].numpy()


# One record and one ranking for every model format (predictions.py runs without TensorFlow).
Prediction = predictions.Prediction
top_predictions = predictions.top_predictions


def load_classifier(saved_model_dir):
    """Loads a SavedModel that retrain exported (its folder or a version folder in it).
    Raises UserError for anything else."""
    found = model_files.check_saved_model_dir(saved_model_dir)
    try:
        model = tf.saved_model.load(found)
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
    classifier = Classifier(model, labels, tuple(int(value) for value in model.image_size.numpy()))
    if version >= 2:  # Format 1 has no temperature and no unknown score.
        classifier.unknown_threshold = float(model.unknown_threshold.numpy())
        classifier.temperature = float(model.temperature.numpy())
    return classifier


def find_image_files(image_dir):
    """All files under image_dir that retrain would consider (data.dataset's walker: symlinks
    followed, hidden and system files left out), sorted; images are told apart later."""
    if not os.path.isdir(image_dir):
        raise UserError(f"--image_dir {image_dir!r} is not a folder; pass a folder of images.")
    return dataset.list_files(image_dir)


def classify_files(classifier, paths, batch_size=None, max_pixels=images.DEFAULT_MAX_PIXELS,
                   forward_streams=None, unknown_threshold=None):
    """Yields a Prediction per path, in order; unreadable files carry an error instead.

    Files are read, decoded and resized by the reader that computes bottlenecks in training
    (preprocess.pixel_batches), in worker threads ahead of the model.
    batch_size None: batch_tuning's choice among its candidates for this many files.
    forward_streams: batches run through the model at once (streams.ordered_map); None:
    devices.forward_streams().
    unknown_threshold: overrides the model's threshold (None: the model's). A model without
    an unknown score gives unknown_score and unknown None.
    """
    candidates = batch_tuning.batch_size_candidates(batch_size, len(paths))
    batches = preprocess.pixel_batches(paths, classifier.image_size, max(candidates), max_pixels)

    threshold = classifier_threshold(classifier, unknown_threshold)

    def predict(pixels):
        # One array per batch (the batch tuner splits and concatenates them): the
        # probabilities, then the unknown score as a last column (nan: no score).
        probabilities, scores = predict_with_unknown(classifier, preprocess.as_unit_float(pixels))
        if scores is None:
            scores = np.full(len(probabilities), np.nan, np.float32)
        return np.concatenate([probabilities, np.reshape(scores, [-1, 1])], axis=1)

    for batch, outputs in batch_tuning.forward_batches(predict, batches, candidates,
                                                       "label_image", forward_streams):
        for position, (index, error) in enumerate(zip(batch.indices, batch.errors)):
            if error is not None:
                yield Prediction(paths[index], error=error)
                continue
            prediction = Prediction(paths[index], probabilities=outputs[position, :-1])
            if not np.isnan(outputs[position, -1]):
                prediction.unknown_score = float(outputs[position, -1])
                prediction.unknown = (bool(prediction.unknown_score > threshold)
                                      if threshold is not None else None)
            yield prediction


def predict_with_unknown(classifier, batch):
    """(probabilities [B, C], unknown scores [B] or None) from any classifier: one without
    predict_with_unknown (or an unknown score) gives None."""
    if hasattr(classifier, "predict_with_unknown"):
        return classifier.predict_with_unknown(batch)
    return classifier.predict(batch), None


def classifier_threshold(classifier, override=None):
    """The unknown threshold to use: override (--unknown_threshold) if given, else the
    model's; None when there is neither."""
    if override is not None:
        return float(override)
    return getattr(classifier, "unknown_threshold", None)
