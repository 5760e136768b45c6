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
from retrain.evaluation import metrics
from retrain.export import saved_model
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
    if version > saved_model.EXPORT_FORMAT_VERSION:
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


@dataclasses.dataclass
class FolderEvaluation:
    """Predictions for a labelled folder: row i of probabilities belongs to paths[i]."""

    paths: list  # images that were scored
    true_labels: np.ndarray  # int64 [num_images], indices into the model's labels
    probabilities: np.ndarray  # float32 [num_images, num_labels]
    failed: list  # [Prediction] for files that could not be read as images
    unlabelled: list  # files directly in the folder, outside any label subfolder


def find_labelled_files(image_dir, labels):
    """The files of each subfolder of image_dir, which is named after its true label.

    Returns:
      ([(path, label index)], [files directly in image_dir, which have no label]).

    Raises:
      UserError: image_dir is not a folder, has no subfolders, or has one not named like
        any of the model's labels.
    """
    if not os.path.isdir(image_dir):
        raise UserError(f"--image_dir {dataset.display_path(image_dir)!r} is not a folder; pass "
                        "a folder with one subfolder of images per label.")
    entries = sorted((entry for entry in os.scandir(image_dir) if not entry.name.startswith(".")),
                     key=lambda entry: entry.name)
    folders = [entry for entry in entries if entry.is_dir()]
    if not folders:
        raise UserError(f"--image_dir {dataset.display_path(image_dir)!r} has no subfolders; to "
                        "--evaluate, put each image in a subfolder named after its true label.")
    index_of = {label: index for index, label in enumerate(labels)}
    unknown = [entry.name for entry in folders if entry.name not in index_of]
    if unknown:
        shown = ", ".join(repr(dataset.display_path(label)) for label in labels[:20])
        raise UserError(
            f"Folder {dataset.display_path(unknown[0])!r} in --image_dir is not a label of the model "
            f"(its labels: {shown}{', ...' if len(labels) > 20 else ''}); rename the folder to one "
            "of them or move it out of --image_dir.")
    labelled = [(path, index_of[entry.name]) for entry in folders
                for path in find_image_files(entry.path)]
    unlabelled = [entry.path for entry in entries if not entry.is_dir()]
    return labelled, unlabelled


def evaluate_folder(classifier, image_dir, batch_size=None, max_pixels=images.DEFAULT_MAX_PIXELS):
    """Classifies every image in image_dir's label subfolders. Returns a FolderEvaluation."""
    labelled, unlabelled = find_labelled_files(image_dir, classifier.labels)
    paths = [path for path, _ in labelled]
    scored, truth, rows, failed = [], [], [], []
    for prediction, (_, label_index) in zip(classify_files(classifier, paths, batch_size, max_pixels),
                                            labelled):
        if prediction.error:
            failed.append(prediction)
            continue
        scored.append(prediction.path)
        truth.append(label_index)
        rows.append(prediction.probabilities)
    probabilities = (np.stack(rows).astype(np.float32) if rows
                     else np.zeros([0, len(classifier.labels)], np.float32))
    return FolderEvaluation(scored, np.array(truth, np.int64), probabilities, failed, unlabelled)


def evaluation_metrics(evaluation, labels, image_dir, saved_model_dir):
    """The metrics.json dict of a folder evaluation (the keys retrain's own run writes)."""
    result = metrics.classification_metrics(evaluation.true_labels, evaluation.probabilities, labels)
    predicted = np.argmax(evaluation.probabilities, axis=1)
    misclassified = [
        {"image": dataset.display_path(os.path.relpath(path, image_dir)), "true": labels[true],
         "predicted": labels[guess], "score": float(row[guess])}
        for path, true, guess, row in zip(evaluation.paths, evaluation.true_labels, predicted,
                                          evaluation.probabilities) if guess != true]
    data = {"module": saved_model_dir, "image_dir": image_dir, "labels": list(labels),
            **result.as_dict(), "misclassified": misclassified,
            "skipped_images": [{"path": dataset.display_path(failure.path), "reason": failure.error}
                               for failure in evaluation.failed],
            "skipped_image_count": len(evaluation.failed)}
    return result, data
