"""Temperature scaling, ECE and the unknown score, on synthetic numbers (no TensorFlow)."""

import math

import numpy as np
import pytest

from retrain.evaluation import metrics
from retrain.training import calibration
from retrain.training import novelty


def _overconfident(count, seed):
    """Logits whose argmax is right 70% of the time but scaled to look ~99% sure."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, count)
    logits = rng.normal(0, 1, (count, 4))
    right = rng.random(count) < 0.7
    predicted = np.where(right, labels, (labels + 1) % 4)
    logits[np.arange(count), predicted] += 2.0
    return logits * 5.0, labels


def test_temperature_lowers_ece_on_an_overconfident_set():
    validation_logits, validation_labels = _overconfident(2000, 0)
    test_logits, test_labels = _overconfident(2000, 1)
    temperature = calibration.fit_temperature(validation_logits, validation_labels)
    assert temperature > 2.0  # the logits were blown up 5x
    before = metrics.reliability(calibration.softmax(test_logits), test_labels)["ece"]
    after = metrics.reliability(calibration.softmax(test_logits, temperature), test_labels)["ece"]
    assert before > 0.3 and after < before / 3
    # The NLL at the fitted temperature is below its neighbours'.
    nll = calibration.negative_log_likelihood
    assert nll(validation_logits, validation_labels, temperature) <= min(
        nll(validation_logits, validation_labels, temperature * 1.1),
        nll(validation_logits, validation_labels, temperature / 1.1))


def test_rescaled_probabilities_equal_softmax_of_scaled_logits():
    logits, _ = _overconfident(50, 2)
    np.testing.assert_allclose(
        metrics.rescale_probabilities(calibration.softmax(logits), 3.0),
        calibration.softmax(logits, 3.0), atol=1e-9)


def test_ece_counts_bins_exactly():
    # Two images at confidence 0.9 (one right), two at 0.6 (both right): bins 13 and 8 of 15.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    result = metrics.reliability(probabilities, labels)
    assert result["ece"] == pytest.approx(0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6))
    counts = [row["count"] for row in result["bins"]]
    assert len(counts) == 15 and sum(counts) == 4 and counts[13] == 2 and counts[8] == 2
    assert math.isnan(metrics.reliability(np.zeros([0, 2]), np.zeros([0]))["ece"])


def test_no_validation_images_keep_temperature_one_and_never_unknown():
    assert calibration.fit_temperature(np.zeros([0, 3]), np.zeros([0], int)) == 1.0
    assert novelty.choose_threshold([], 0.95) == math.inf


@pytest.mark.parametrize("count", [1, 7, 20, 100, 101])
def test_threshold_keeps_the_stated_share_known(count):
    scores = np.random.default_rng(count).random(count)
    threshold = novelty.choose_threshold(scores, 0.95)
    kept = int(np.sum(scores <= threshold))
    assert kept == math.ceil(0.95 * count)  # distinct scores: exactly that many


@pytest.mark.parametrize("method", novelty.METHODS)
def test_every_score_separates_a_far_cluster(method):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 16)) * 4
    def cluster(labels):
        return centres[labels] + rng.normal(0, 0.5, (len(labels), 16))
    train_labels = np.repeat(np.arange(3), 100)
    train = cluster(train_labels)
    # A linear head that separates the clusters: the centres as weights.
    weights, biases = centres.T.astype(np.float32), -0.5 * np.sum(centres ** 2, axis=1)
    validation_labels = np.repeat(np.arange(3), 40)
    validation = cluster(validation_labels)
    detector = novelty.fit_detector(method, train, train_labels, validation,
                                    validation @ weights + biases, 3, 0.95, k=3, bank_size=60)
    known = cluster(np.repeat(np.arange(3), 40))
    # Far from every class (the centres are ~16 from the origin), where no logit is large.
    far = rng.normal(0, 0.5, (120, 16))
    known_scores = detector.score(known, known @ weights + biases)
    far_scores = detector.score(far, far @ weights + biases)
    if method != "msp":  # msp measures ambiguity between classes, not distance
        assert novelty.auroc(known_scores, far_scores) > 0.95
        assert np.mean(far_scores > detector.threshold) > 0.9
    assert np.mean(known_scores > detector.threshold) < 0.2
    if method == "knn":
        assert len(detector.bank) <= 60 and np.allclose(np.linalg.norm(detector.bank, axis=1), 1)


def test_auroc_of_perfect_random_and_tied_scores():
    assert novelty.auroc([0, 1, 2], [3, 4]) == 1.0
    assert novelty.auroc([3, 4], [0, 1]) == 0.0
    assert novelty.auroc([1, 1], [1, 1]) == 0.5


def test_report_shows_the_reliability_diagram_and_the_threshold(tmp_path):
    from retrain.evaluation import report  # pylint: disable=import-outside-toplevel
    logits, labels = _overconfident(300, 3)
    metrics_dict = {"calibration": metrics.calibration_metrics(calibration.softmax(logits),
                                                               labels, 4.0),
                    "unknown": {"method": "max_logit", "threshold": -3.5, "known_share": 0.95,
                                "test_unknown_share": 0.04}}
    pictures = report.write_metrics_and_report(str(tmp_path / "metrics.json"), metrics_dict)
    assert pictures[report.RELIABILITY_FILE].startswith(b"\x89PNG")
    page = (tmp_path / report.REPORT_FILE).read_text()
    assert "Calibration and unknown" in page and "max_logit" in page and "95.0%" in page
