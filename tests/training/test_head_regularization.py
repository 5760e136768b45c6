"""The new layer's weight decay, chosen on the validation split (issue 24), and label smoothing."""

import json

import numpy as np
import pytest

from retrain import pipeline
from retrain.training import checkpoint
from retrain.training import train
from tests.conftest import fast_config
from tests.conftest import parse_retrain_flags


def _overfitting_problem(seed=0, classes=3, feature_dim=500, scale=0.05):
    """30 training examples in 500 noisy dimensions, where a layer without a penalty fits
    every training example and generalises worse: {split: (float32 [n, D], int32 [n])}.
    Small features (scale) make the candidates' decays matter within a few hundred steps."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.25, (classes, feature_dim))

    def draw(count):
        labels = rng.integers(0, classes, count).astype(np.int32)
        features = centres[labels] + rng.normal(0, 1.0, (count, feature_dim))
        return (features * scale).astype(np.float32), labels

    return {"training": draw(30), "validation": draw(300), "testing": draw(1000)}


def _settings(**overrides):
    # learning rate 20: the step of rate 0.05 on features 20x as large (1 / scale^2).
    values = dict(steps=400, batch_size=30, learning_rate=20.0, eval_step_interval=50,
                  validation_batch_size=-1, seed=0)
    values.update(overrides)
    return train.TrainingSettings(**values)


def _train(data, settings, checkpoint_settings=None):
    return train.train_head(*data["training"], *data["validation"], 3, settings,
                            checkpoint_settings=checkpoint_settings)


def _test_scores(head, data):
    """(accuracy, mean cross-entropy) on the testing split."""
    features, labels = data["testing"]
    probabilities = head.probabilities(features)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    cross_entropy = float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels] + 1e-12)))
    return accuracy, cross_entropy


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [0, 1])
def test_chosen_decay_beats_no_decay_where_the_plain_layer_overfits(seed):
    data = _overfitting_problem(seed)
    plain, plain_history = _train(data, _settings(weight_decay=0.0))
    chosen, history = _train(data, _settings(weight_decay=None))
    # The plain layer fits its 30 training examples exactly: it overfits.
    assert plain_history.train_accuracy[-1] == 1.0
    regularization = history.regularization
    assert regularization["chosen_by"] == "validation cross-entropy"
    assert [row["weight_decay"] for row in regularization["candidates"]] == list(
        train.WEIGHT_DECAY_CANDIDATES)
    assert regularization["weight_decay"] > 0
    plain_accuracy, plain_cross_entropy = _test_scores(plain, data)
    chosen_accuracy, chosen_cross_entropy = _test_scores(chosen, data)
    assert chosen_cross_entropy < plain_cross_entropy
    assert chosen_accuracy >= plain_accuracy


@pytest.mark.timeout(120)
def test_each_candidate_trains_as_it_would_alone():
    """The batched candidates share batches, not arithmetic: candidate k's layer is the one
    a run with --weight_decay=WEIGHT_DECAY_CANDIDATES[k] trains."""
    data = _overfitting_problem()
    chosen, history = _train(data, _settings(weight_decay=None, label_smoothing=0.1))
    alone, alone_history = _train(data, _settings(weight_decay=history.regularization[
        "weight_decay"], label_smoothing=0.1))
    # Float rounding differs (one matmul of K * C columns against C), nothing more.
    np.testing.assert_allclose(chosen.weights, alone.weights, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(chosen.biases, alone.biases, rtol=1e-4, atol=2e-5)
    assert alone_history.regularization["chosen_by"] == "--weight_decay"
    assert len(alone_history.regularization["candidates"]) == 1


@pytest.mark.timeout(120)
def test_no_validation_images_keeps_the_first_candidate():
    data = _overfitting_problem()
    data["validation"] = (data["validation"][0][:0], data["validation"][1][:0])
    _, history = _train(data, _settings(weight_decay=None, steps=50))
    assert history.regularization["chosen_by"] == "no validation images"
    assert history.regularization["weight_decay"] == train.WEIGHT_DECAY_CANDIDATES[0]


@pytest.mark.timeout(120)
def test_label_smoothing_keeps_logits_bounded():
    """Smoothed targets have a finite optimum: the logit gaps stay near log((1 - s + s/C) /
    (s/C)) instead of growing without bound as they do on separable data."""
    data = _overfitting_problem(scale=1.0)
    plain, _ = _train(data, _settings(weight_decay=0.0, learning_rate=0.05, steps=500))
    smoothed, _ = _train(data, _settings(weight_decay=0.0, learning_rate=0.05, steps=500,
                                         label_smoothing=0.2))

    def largest_gap(head):
        logits = data["training"][0] @ head.weights + head.biases
        return float(np.max(logits.max(axis=1) - logits.min(axis=1)))

    # log((1 - 0.2 + 0.2 / 3) / (0.2 / 3)) = 2.6 (measured 2.57); unsmoothed: 46.
    assert largest_gap(smoothed) < 4.0 < largest_gap(plain)


@pytest.mark.timeout(120)
def test_resumed_search_equals_a_straight_one(tmp_path):
    data = _overfitting_problem()
    settings = _settings(weight_decay=None, label_smoothing=0.1)
    straight = _train(data, settings)
    _train(data, train.TrainingSettings(**{**vars(settings), "steps": 170}),
           checkpoint.CheckpointSettings(str(tmp_path)))
    resumed = _train(data, settings, checkpoint.CheckpointSettings(str(tmp_path), resume=True))
    assert np.array_equal(resumed[0].weights, straight[0].weights)
    # (The 170-step run logged its own last step: the histories differ by that row.)
    assert resumed[1].regularization == straight[1].regularization


def test_a_checkpoint_of_another_weight_decay_is_refused(tmp_path):
    data = _overfitting_problem()
    _train(data, _settings(weight_decay=0.001, steps=20), checkpoint.CheckpointSettings(str(tmp_path)))
    with pytest.raises(Exception, match="weight_decay"):
        _train(data, _settings(weight_decay=None, steps=40),
               checkpoint.CheckpointSettings(str(tmp_path), resume=True))


@pytest.mark.parametrize("argv, expected", [
    ([], None), (["--weight_decay=auto"], None), (["--weight_decay=0.001"], 0.001),
    (["--weight_decay", "0"], 0.0)])
def test_weight_decay_flag(argv, expected):
    config = parse_retrain_flags(["--image_dir", "x", *argv])
    assert config.weight_decay == expected
    assert pipeline.training_settings(config.resolved()).weight_decay == expected


@pytest.mark.parametrize("value", ["-0.1", "strong", "nan"])
def test_weight_decay_flag_refuses_bad_values(value):
    with pytest.raises(Exception, match="weight_decay"):
        parse_retrain_flags(["--image_dir", "x", f"--weight_decay={value}"])


def test_label_smoothing_flag_default_and_value():
    assert parse_retrain_flags(["--image_dir", "x"]).label_smoothing == 0.1
    assert parse_retrain_flags(["--image_dir", "x",
                                "--label_smoothing=0"]).label_smoothing == 0.0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("weight_decay, chosen_by", [
    (None, "validation cross-entropy"), (0.001, "--weight_decay")])
def test_metrics_and_report_give_the_weight_decay(tmp_path, tiny_module, colour_images,
                                                 weight_decay, chosen_by):
    config = fast_config(colour_images, tiny_module, tmp_path / "out", weight_decay=weight_decay)
    result = pipeline.run(config)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    regularization = metrics["regularization"]
    assert regularization == result.history.regularization
    assert regularization["chosen_by"] == chosen_by
    assert regularization["label_smoothing"] == 0.1
    if weight_decay is not None:
        assert regularization["weight_decay"] == weight_decay
    else:
        assert regularization["weight_decay"] in train.WEIGHT_DECAY_CANDIDATES
    report = (tmp_path / "out" / "report.html").read_text()
    assert f"{regularization['weight_decay']:g} ({chosen_by})" in report
