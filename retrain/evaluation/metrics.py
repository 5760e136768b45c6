"""Classification metrics from predictions: plain numpy, no TensorFlow, no plotting.

The conventions are scikit-learn's (rows of the confusion matrix are true labels, columns
predicted; a precision or recall whose denominator is zero counts as 0), so the numbers can
be checked against it, but retrain does not depend on it.
"""

import dataclasses
import os

import numpy as np

# retrain.py's question "is it top-1 or top-5?" (hub #220) is answered by reporting both.
TOP_K = 5


@dataclasses.dataclass
class ClassScores:
    """Precision, recall, F1 (each in [0, 1]) and support (number of true examples)."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclasses.dataclass
class ClassificationMetrics:
    labels: list  # class names; index i is class i
    count: int  # number of examples scored
    top1_accuracy: float  # NaN when count is 0
    top5_accuracy: float  # top-k with k = min(5, number of classes); NaN when count is 0
    per_class: list  # [ClassScores], one per label, in label order
    macro_average: ClassScores  # unweighted mean over classes; support = count
    weighted_average: ClassScores  # mean weighted by support; support = count
    confusion: np.ndarray  # int64 [num_classes, num_classes]: [true, predicted] counts

    def as_dict(self):
        """A JSON-ready dict (lists and floats only) with the keys metrics.json uses."""
        return {
            "test_count": self.count,
            "test_top1_accuracy": self.top1_accuracy,
            "test_top5_accuracy": self.top5_accuracy,
            "per_class": [dataclasses.asdict(scores) for scores in self.per_class],
            "macro_average": dataclasses.asdict(self.macro_average),
            "weighted_average": dataclasses.asdict(self.weighted_average),
            "confusion_matrix": {"labels": list(self.labels), "rows": "true label",
                                 "columns": "predicted label",
                                 "matrix": self.confusion.tolist()},
        }


def confusion_matrix(true_labels, predicted_labels, num_classes):
    """Counts of (true, predicted) pairs.

    Args:
      true_labels, predicted_labels: int arrays [num_examples] with values in [0, num_classes).
      num_classes: number of classes.

    Returns:
      int64 [num_classes, num_classes]; entry [t, p] counts examples of class t predicted as p.
    """
    true_labels = np.asarray(true_labels, dtype=np.int64)
    predicted_labels = np.asarray(predicted_labels, dtype=np.int64)
    if true_labels.shape != predicted_labels.shape:
        raise ValueError(f"{true_labels.shape} true labels but {predicted_labels.shape} predictions.")
    flat = true_labels * num_classes + predicted_labels
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def top_k_accuracy(probabilities, true_labels, k):
    """Fraction of examples whose true class is among the k highest scores (NaN if none).

    Args:
      probabilities: float [num_examples, num_classes] scores.
      true_labels: int [num_examples].
      k: how many top classes count as a hit (clipped to num_classes).
    """
    probabilities = np.asarray(probabilities)
    if len(probabilities) == 0:
        return float("nan")
    k = min(k, probabilities.shape[1])
    # Stable sort: ties go to the lower class index, as argmax does.
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == np.asarray(true_labels)[:, None], axis=1)))


def class_scores(confusion, labels):
    """Per-class precision, recall, F1 and support from a confusion matrix.

    Args:
      confusion: int [num_classes, num_classes], rows true, columns predicted.
      labels: class names.

    Returns:
      [ClassScores] in label order.
    """
    confusion = np.asarray(confusion)
    true_positives = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = _safe_divide(true_positives, predicted)
    recall = _safe_divide(true_positives, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return [ClassScores(label, float(p), float(r), float(f), int(s))
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)]


def average_scores(scores, name, weighted):
    """The mean of per-class scores: unweighted (macro) or weighted by support.

    A weighted average over zero examples is 0, as is any average over no classes.
    """
    support = np.array([score.support for score in scores], dtype=np.float64)
    weights = support if weighted else np.ones_like(support)
    total = weights.sum()

    def mean(values):
        return float(np.dot(weights, values) / total) if total else 0.0

    return ClassScores(name, mean([s.precision for s in scores]), mean([s.recall for s in scores]),
                       mean([s.f1 for s in scores]), int(support.sum()))


def classification_metrics(true_labels, probabilities, labels):
    """All the test metrics of one set of predictions.

    Args:
      true_labels: int [num_examples] class indices into labels.
      probabilities: float [num_examples, num_classes] scores (softmax outputs); the
        predicted class is the argmax.
      labels: class names, len num_classes.

    Returns:
      ClassificationMetrics.
    """
    num_classes = len(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1, num_classes)
    true_labels = np.asarray(true_labels, dtype=np.int64).reshape(-1)
    predicted = np.argmax(probabilities, axis=1) if len(probabilities) else true_labels
    confusion = confusion_matrix(true_labels, predicted, num_classes)
    per_class = class_scores(confusion, labels)
    count = len(true_labels)
    return ClassificationMetrics(
        labels=list(labels), count=count,
        top1_accuracy=float(np.trace(confusion) / count) if count else float("nan"),
        top5_accuracy=top_k_accuracy(probabilities, true_labels, TOP_K),
        per_class=per_class,
        macro_average=average_scores(per_class, "macro avg", weighted=False),
        weighted_average=average_scores(per_class, "weighted avg", weighted=True),
        confusion=confusion)


def format_report(result):
    """A text table of the metrics (scikit-learn's classification_report layout) and the
    confusion matrix, as lines for the log."""
    names = [printable(label) for label in result.labels]
    width = max([len(name) for name in names] + [len("weighted avg")])
    lines = [f"Top-1 accuracy = {result.top1_accuracy * 100:.1f}%, top-{TOP_K} accuracy = "
             f"{result.top5_accuracy * 100:.1f}% (N={result.count})",
             f"{'':>{width}}  precision     recall   f1-score    support"]
    for name, scores in [*zip(names, result.per_class), (None, result.macro_average),
                         (None, result.weighted_average)]:
        if scores is result.macro_average:
            lines.append("")
        lines.append(f"{name or scores.label:>{width}}  {scores.precision:9.3f}  {scores.recall:9.3f}  "
                     f"{scores.f1:9.3f}  {scores.support:9d}")
    lines += ["", "Confusion matrix (rows: true label, columns: predicted label):"]
    cell = max(5, len(str(int(result.confusion.max(initial=0)))) + 1)
    lines.append(f"{'':>{width}} " + "".join(f"{index:>{cell}d}" for index in range(len(result.labels))))
    for index, (name, row) in enumerate(zip(names, result.confusion)):
        lines.append(f"{name:>{width}} " + "".join(f"{value:>{cell}d}" for value in row)
                     + f"   ({index})")
    return lines


def printable(label):
    """A label as text that any terminal or file can take: undecodable bytes of a folder
    name (kept as surrogates by Python) become backslash escapes."""
    return os.fsencode(label).decode("utf-8", "backslashreplace")


def _safe_divide(numerator, denominator):
    """numerator / denominator elementwise, 0 where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    result = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=result, where=denominator != 0)
    return result


# Guo et al. (2017)'s expected calibration error: equal-width bins of the top probability.
CALIBRATION_BINS = 15


def rescale_probabilities(probabilities, temperature):
    """float64 [n, C]: softmax(logits / temperature) from probabilities = softmax(logits).

    log(p) equals the logits up to a constant per row, which the softmax ignores; p is
    floored at 1e-30 so a probability that underflowed to 0 stays negligible.
    """
    scaled = np.log(np.maximum(np.asarray(probabilities, np.float64), 1e-30)) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def reliability(probabilities, true_labels, bins=CALIBRATION_BINS):
    """Expected calibration error and the reliability diagram's bins.

    Args:
      probabilities: float [n, C]; true_labels: int [n].
      bins: equal-width bins of the top probability over [0, 1]; bin i holds (i/b, (i+1)/b],
        bin 0 also 0.

    Returns:
      {"ece": sum over bins of |bin| / n * |accuracy - mean confidence| (nan when n is 0),
       "bins": [{"lower", "upper", "count", "accuracy", "confidence"}] (None where empty)}.
    """
    probabilities = np.asarray(probabilities, np.float64)
    true_labels = np.asarray(true_labels)
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros([0])
    correct = (probabilities.argmax(axis=1) == true_labels) if len(probabilities) else confidence
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for number in range(bins):
        members = index == number
        count = int(members.sum())
        accuracy = float(np.mean(correct[members])) if count else None
        mean_confidence = float(np.mean(confidence[members])) if count else None
        if count:
            ece += count / len(confidence) * abs(accuracy - mean_confidence)
        rows.append({"lower": number / bins, "upper": (number + 1) / bins, "count": count,
                     "accuracy": accuracy, "confidence": mean_confidence})
    return {"ece": float(ece) if len(confidence) else float("nan"), "bins": rows}


def calibration_metrics(probabilities, true_labels, temperature):
    """metrics.json's "calibration" entry: the temperature, and ECE and reliability bins on
    these (test) images before and after it."""
    before = reliability(probabilities, true_labels)
    after = reliability(rescale_probabilities(probabilities, temperature), true_labels)
    return {"temperature": float(temperature), "bins": CALIBRATION_BINS,
            "ece_before": before["ece"], "ece_after": after["ece"],
            "reliability_before": before["bins"], "reliability_after": after["bins"]}
