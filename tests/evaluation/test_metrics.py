"""Metrics on hand-made predictions whose answers can be checked by eye."""

import math

import numpy as np
import pytest

from retrain.evaluation import metrics

LABELS = ["cat", "dog", "fish"]
TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDICTED = [0, 0, 1, 2, 1, 1, 0, 2, 2, 2]
# By eye: cats 2 right, 1 called dog, 1 called fish; dogs 2 right, 1 called cat; fish all right.
CONFUSION = [[2, 1, 1],
             [1, 2, 0],
             [0, 0, 3]]


def _one_hot_scores(predicted, num_classes):
    """Probabilities that put 0.8 on the predicted class and share the rest."""
    scores = np.full([len(predicted), num_classes], 0.2 / (num_classes - 1))
    scores[np.arange(len(predicted)), predicted] = 0.8
    return scores


@pytest.fixture(name="result")
def fixture_result():
    return metrics.classification_metrics(TRUE, _one_hot_scores(PREDICTED, 3), LABELS)


def test_confusion_matrix_rows_are_true_columns_predicted():
    np.testing.assert_array_equal(metrics.confusion_matrix(TRUE, PREDICTED, 3), CONFUSION)


def test_confusion_matrix_keeps_classes_that_never_occur():
    confusion = metrics.confusion_matrix([0, 0], [0, 2], 4)
    assert confusion.shape == (4, 4) and confusion.sum() == 2 and confusion[0, 2] == 1


def test_per_class_scores(result):
    cat, dog, fish = result.per_class
    assert (cat.precision, cat.recall, cat.f1, cat.support) == pytest.approx((2 / 3, 1 / 2, 4 / 7, 4))
    assert (dog.precision, dog.recall, dog.f1, dog.support) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 3))
    assert (fish.precision, fish.recall, fish.f1, fish.support) == pytest.approx((3 / 4, 1, 6 / 7, 3))
    assert [scores.label for scores in result.per_class] == LABELS


def test_accuracy_and_averages(result):
    assert result.count == 10
    assert result.top1_accuracy == pytest.approx(0.7)
    assert result.macro_average.f1 == pytest.approx((4 / 7 + 2 / 3 + 6 / 7) / 3)
    assert result.weighted_average.f1 == pytest.approx((4 * 4 / 7 + 3 * 2 / 3 + 3 * 6 / 7) / 10)
    assert result.macro_average.support == result.weighted_average.support == 10
    # Three classes: every true label is in the top five.
    assert result.top5_accuracy == 1.0


def test_agrees_with_scikit_learn(result):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    report = sklearn_metrics.classification_report(TRUE, PREDICTED, output_dict=True,
                                                   zero_division=0)
    for index, scores in enumerate(result.per_class):
        assert scores.f1 == pytest.approx(report[str(index)]["f1-score"])
    assert result.macro_average.precision == pytest.approx(report["macro avg"]["precision"])
    assert result.weighted_average.recall == pytest.approx(report["weighted avg"]["recall"])


def test_top5_counts_rank_five_and_not_rank_six():
    # Class scores fall with the index, so class i is ranked i + 1.
    scores = np.tile(np.linspace(1.0, 0.5, 7), (3, 1))
    assert metrics.top_k_accuracy(scores, [4, 5, 0], 5) == pytest.approx(2 / 3)
    assert metrics.top_k_accuracy(scores, [4, 5, 0], 1) == pytest.approx(1 / 3)


def test_class_never_predicted_and_never_present_scores_zero_not_nan():
    result = metrics.classification_metrics([0, 1], _one_hot_scores([0, 1], 3), LABELS)
    fish = result.per_class[2]
    assert (fish.precision, fish.recall, fish.f1, fish.support) == (0.0, 0.0, 0.0, 0)
    assert result.macro_average.f1 == pytest.approx(2 / 3)  # Fish's 0 counts in the macro mean.
    assert result.weighted_average.f1 == pytest.approx(1.0)


def test_no_examples_gives_nan_accuracy_and_zero_matrix():
    result = metrics.classification_metrics([], np.zeros([0, 3]), LABELS)
    assert result.count == 0 and math.isnan(result.top1_accuracy) and math.isnan(result.top5_accuracy)
    assert result.confusion.tolist() == [[0] * 3] * 3
    assert result.macro_average.f1 == 0.0


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match=r"true labels but .* predictions"):
        metrics.confusion_matrix([0, 1], [0], 2)


def test_as_dict_is_json_ready(result):
    import json  # pylint: disable=import-outside-toplevel
    data = json.loads(json.dumps(result.as_dict()))
    assert data["confusion_matrix"]["matrix"] == CONFUSION
    assert data["confusion_matrix"]["labels"] == LABELS
    assert data["per_class"][2] == {"label": "fish", "precision": 0.75, "recall": 1.0,
                                    "f1": pytest.approx(6 / 7), "support": 3}
    assert data["macro_average"]["label"] == "macro avg"


def test_format_report_lines(result):
    lines = metrics.format_report(result)
    assert lines[0] == "Top-1 accuracy = 70.0%, top-5 accuracy = 100.0% (N=10)"
    assert any(line.split() == ["cat", "0.667", "0.500", "0.571", "4"] for line in lines)
    assert any(line.split() == ["fish", "0", "0", "3", "(2)"] for line in lines)


def test_format_report_survives_undecodable_label():
    label = b"caf\xe9".decode("utf-8", "surrogateescape")  # A Latin-1 folder name on Linux.
    result = metrics.classification_metrics([0, 1], _one_hot_scores([0, 1], 2), [label, "b"])
    text = "\n".join(metrics.format_report(result))
    text.encode("utf-8")  # Would raise on a lone surrogate.
    assert "caf\\xe9" in text
