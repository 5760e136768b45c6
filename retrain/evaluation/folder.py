"""label_image --evaluate: a model's metrics on a folder of labelled subfolders.

The folders are walked by the same rules as retrain's (data.dataset.walk_files: symlinks
followed, hidden and system files left out, unreadable folders reported), so evaluating
the training folder scores the images that training saw.
"""

import dataclasses
import os

import numpy as np

from retrain.data import dataset
from retrain.data import images
from retrain.errors import UserError
from retrain.evaluation import metrics
from retrain.predict.label_image import classify_files


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
                for path in dataset.list_files(entry.path)]
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
