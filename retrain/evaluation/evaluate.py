"""Final evaluation of the trained layer on the test split."""

import dataclasses

from absl import logging
import numpy as np

from retrain.data import dataset


@dataclasses.dataclass
class TestResult:
    top1_accuracy: float
    top5_accuracy: float
    count: int
    misclassified: list  # [(relative_path, true_label, predicted_label, score)]
    # What retrain.evaluation.metrics needs: int [count] true class indices and float32 [count, num_classes]
    # softmax outputs of the images scored, in the same order.
    true_labels: np.ndarray = None
    probabilities: np.ndarray = None


def evaluate_head(head, features, labels, image_files, label_names, test_batch_size=-1, seed=0):
    """Scores the head on the test split and logs retrain.py's "Final test accuracy" line.

    Args:
      head: train.Head.
      features: float32 [num_test, feature_dim]; labels: int [num_test].
      image_files: [dataset.ImageFile] matching the rows.
      label_names: class names.
      test_batch_size: -1 for all test images, else a random sample of this many.
      seed: for that sample.
    """
    indices = np.arange(len(labels))
    if test_batch_size != -1 and test_batch_size < len(labels):
        indices = np.sort(np.random.default_rng(seed).choice(len(labels), test_batch_size,
                                                             replace=False))
    if len(indices) == 0:
        logging.info("No test images (--testing_percentage=0): skipping the final test.")
        return TestResult(float("nan"), float("nan"), 0, [], np.zeros([0], np.int64),
                          np.zeros([0, len(label_names)], np.float32))
    probabilities = head.probabilities(features[indices])
    truth = labels[indices]
    ranked = np.argsort(-probabilities, axis=1)
    top1 = float(np.mean(ranked[:, 0] == truth))
    top5 = float(np.mean([true in row[:5] for true, row in zip(truth, ranked)]))
    misclassified = [
        (image_files[index].relative_path, label_names[true], label_names[row[0]],
         float(probabilities[position, row[0]]))
        for position, (index, true, row) in enumerate(zip(indices, truth, ranked)) if row[0] != true]
    logging.info("Final test accuracy = %.1f%% (N=%d)", top1 * 100, len(indices))
    return TestResult(top1, top5, len(indices), misclassified, truth, probabilities)


def log_misclassified(result):
    """retrain.py's --print_misclassified_test_images listing."""
    logging.info("=== MISCLASSIFIED TEST IMAGES ===")
    for relative_path, _, predicted, _ in result.misclassified:
        logging.info("%70s  %s", dataset.display_path(relative_path), predicted)
