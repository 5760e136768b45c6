"""--fine_tune: the module's weights change, the export carries them, the best step is kept,
a module without trainable variables is refused before any work, and a run resumes exactly."""

import json
import os

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from conftest import fast_config
from retrain import pipeline
from retrain.cli import retrain_command
from retrain.compare import compare
from retrain.data import dataset
from retrain.data import split
from retrain.errors import UserError
from retrain.export import layout
from retrain.export import saved_model
from retrain.features import modules
from retrain.training import calibration
from retrain.training import finetune
from retrain.training import finetune_checkpoint
from retrain.training import finetune_data
from retrain.training import train

# The tiny module's only trainable variable: conftest.build_tiny_module's Dense(3) kernel.
TINY_KERNEL = np.array([[1.0, -1.0, 0.5], [0.5, 1.0, -1.0], [-1.0, 0.5, 1.0]], np.float32)


def _settings(**overrides):
    values = dict(steps=12, batch_size=8, learning_rate=0.05, momentum=0.9, eval_interval=4,
                  validation_batch_size=-1, layers=0, seed=0, max_image_pixels=10**8,
                  inference_batch_size=8)
    values.update(overrides)
    return finetune.FineTuneSettings(**values)


def _split_data(image_dir):
    """pipeline.split_arrays' layout; the features are zeros (fine-tuning reads the images)."""
    collection = dataset.find_images(image_dir)
    splits = split.split_images(collection.images, collection.labels, 10, 10)
    return {name: (np.zeros([len(files), 6], np.float32),
                   np.array([image.label_index for image in files], np.int32), files)
            for name, files in splits.items()}


def _zero_head():
    return train.Head(np.zeros([6, 3], np.float32), np.zeros([3], np.float32))


def _images(image_files):
    """float32 [n, 32, 32, 3] in [0, 1]: the images as training and export see them."""
    outputs, _ = finetune_data.apply_to_images(tf.identity, image_files, (32, 32), 8, 10**8)
    return outputs


@pytest.fixture(scope="module")
def fine_tuned_run(tmp_path_factory, tiny_module, colour_images):
    # learning_rate=0 leaves the head at its near-zero start, so fine-tuning has room to win.
    output_dir = tmp_path_factory.mktemp("fine_tuned") / "out"
    config = fast_config(colour_images, tiny_module, output_dir, learning_rate=0.0,
                         fine_tune=True, fine_tune_steps=40, fine_tune_eval_interval=10,
                         fine_tune_learning_rate=0.05, fine_tune_batch_size=8)
    return pipeline.run(config), config.resolved()


def test_fine_tuning_changes_the_module_weights(fine_tuned_run):
    result, _ = fine_tuned_run
    assert result.fine_tune.best_steps_done > 0
    (kernel,) = result.fine_tune.feature_extractor.trainable_variables
    assert not np.allclose(kernel.numpy(), TINY_KERNEL, atol=1e-4)
    assert result.fine_tune.best_validation_accuracy > result.fine_tune.start_validation_accuracy


def test_export_holds_the_fine_tuned_weights(fine_tuned_run, tiny_module, colour_images, tmp_path):
    result, config = fine_tuned_run
    images = _images(dataset.find_images(colour_images).images)
    features = result.fine_tune.feature_extractor(images).numpy()
    exported = tf.saved_model.load(layout.find_saved_model(config.saved_model_dir))
    # The export divides the logits by the temperature fitted on the validation split.
    temperature = float(exported.temperature.numpy())
    in_memory = calibration.softmax(calibration.logits(features, result.fine_tune.head),
                                    temperature)
    predicted = exported.signatures["serving_default"](image=tf.constant(images))["prediction"]
    np.testing.assert_allclose(predicted.numpy(), in_memory, atol=1e-5)
    # The same head on the frozen module predicts differently: the module's weights moved.
    module = modules.resolve_module(tiny_module)
    saved_model.export_saved_model(modules.load_feature_extractor(module), result.fine_tune.head,
                              result.labels, module.image_size, str(tmp_path / "frozen"))
    frozen = tf.saved_model.load(layout.find_saved_model(str(tmp_path / "frozen")))
    frozen_predicted = frozen.signatures["serving_default"](image=tf.constant(images))["prediction"]
    # (Both at temperature 1: the fitted one, 0.05 here, makes every score 0 or 1.)
    uncalibrated = result.fine_tune.head.probabilities(features)
    assert np.abs(frozen_predicted.numpy() - uncalibrated).max() > 1e-3


def test_metrics_have_frozen_and_fine_tuned_test_accuracy(fine_tuned_run):
    result, config = fine_tuned_run
    with open(config.metrics_file, encoding="utf-8") as metrics_file:
        metrics = json.load(metrics_file)["fine_tune"]
    assert metrics["fine_tuned_test_top1_accuracy"] == result.test.top1_accuracy == 1.0
    assert 0.0 <= metrics["frozen_test_top1_accuracy"] < 1.0  # the untrained head
    assert metrics["best_steps_done"] == result.fine_tune.best_steps_done
    assert metrics["history"]["steps"] == [0, 10, 20, 30, 39]
    assert "fine_tuning" in result.stage_seconds


def test_best_step_is_the_best_evaluation_and_its_checkpoint(fine_tuned_run):
    result, config = fine_tuned_run
    history = result.fine_tune.history
    best = max(range(len(history.steps)), key=lambda index: (
        history.validation_accuracy[index], -history.validation_cross_entropy[index]))
    assert result.fine_tune.best_steps_done == history.steps[best] + 1
    checkpoint_dir = os.path.join(config.output_dir, "checkpoints", finetune.CHECKPOINT_FOLDER)
    with np.load(os.path.join(checkpoint_dir, finetune_checkpoint.BEST_FILE)) as saved:
        kernel, weights, biases = (saved[f"array_{index:05d}"] for index in range(3))
    np.testing.assert_array_equal(
        kernel, result.fine_tune.feature_extractor.trainable_variables[0].numpy())
    np.testing.assert_array_equal(weights, result.fine_tune.head.weights)
    np.testing.assert_array_equal(biases, result.fine_tune.head.biases)


def test_weights_of_a_better_early_step_are_restored(tmp_path, tiny_module, colour_images):
    # Validation labels shifted by one class: the better the network learns the training
    # labels, the worse it scores, so the start (1/3 right) must be what is kept.
    data = _split_data(colour_images)
    features, labels, image_files = data["training"]
    data["validation"] = (features, (labels + 1) % 3, image_files)
    module = modules.resolve_module(tiny_module)
    result = finetune.fine_tune(module, _zero_head(), data, _settings(), str(tmp_path))
    assert result.start_validation_accuracy == pytest.approx(1 / 3, abs=0.1)
    assert result.history.validation_accuracy[-1] < result.start_validation_accuracy
    assert result.best_steps_done == 0
    np.testing.assert_array_equal(result.feature_extractor.trainable_variables[0].numpy(),
                                  TINY_KERNEL)
    np.testing.assert_array_equal(result.head.weights, _zero_head().weights)
    with np.load(tmp_path / finetune_checkpoint.LATEST_FILE) as latest:
        assert not np.allclose(latest["array_00000"], TINY_KERNEL)  # the last step had moved


def test_resumed_run_reaches_the_uninterrupted_weights(tmp_path, tiny_module, colour_images):
    data = _split_data(colour_images)
    module = modules.resolve_module(tiny_module)
    finetune.fine_tune(module, _zero_head(), data, _settings(steps=12), str(tmp_path / "whole"))
    finetune.fine_tune(module, _zero_head(), data, _settings(steps=7), str(tmp_path / "parts"))
    resumed = finetune.fine_tune(module, _zero_head(), data, _settings(steps=12),
                                 str(tmp_path / "parts"), resume=True)
    assert resumed.history.steps == [0, 4, 6, 8, 11]  # 6: the last step of the first part
    with np.load(tmp_path / "whole" / finetune_checkpoint.LATEST_FILE) as whole, \
            np.load(tmp_path / "parts" / finetune_checkpoint.LATEST_FILE) as parts:
        assert whole.files == parts.files
        for name in whole.files:
            if name != "metadata":
                np.testing.assert_allclose(parts[name], whole[name], rtol=1e-6, atol=1e-7)


def test_resume_with_other_settings_is_a_user_error(tmp_path, tiny_module, colour_images):
    data = _split_data(colour_images)
    module = modules.resolve_module(tiny_module)
    finetune.fine_tune(module, _zero_head(), data, _settings(steps=4), str(tmp_path))
    with pytest.raises(UserError, match=r"Cannot resume fine-tuning .* other learning_rate; drop "
                                        r"--resume"):
        finetune.fine_tune(module, _zero_head(), data, _settings(steps=8, learning_rate=0.01),
                           str(tmp_path), resume=True)


def _save_constant_module(path):
    """A feature-vector SavedModel with no variables at all: mean colour times constants."""
    class ConstantModule(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def __call__(self, images):
            return tf.reduce_mean(images, axis=[1, 2]) * tf.constant([1.0, 2.0, 3.0])

    tf.saved_model.save(ConstantModule(), str(path))
    return str(path)


def test_module_without_trainable_variables_is_refused_before_bottlenecks(tmp_path,
                                                                           colour_images):
    module = _save_constant_module(tmp_path / "constant")
    config = fast_config(colour_images, module, tmp_path / "out", fine_tune=True)
    with pytest.raises(UserError, match=r"--fine_tune: module '.*constant' has no trainable "
                                        r"variables .*; drop --fine_tune, or use a module saved "
                                        r"with trainable variables"):
        pipeline.run(config)
    assert not (tmp_path / "out").exists()  # nothing computed, nothing written
    pipeline.run(fast_config(colour_images, module, tmp_path / "frozen"))  # frozen use is fine


def test_more_layers_than_the_module_has_is_a_user_error(tmp_path, tiny_module, colour_images):
    config = fast_config(colour_images, tiny_module, tmp_path / "out", fine_tune=True,
                         fine_tune_layers=2)
    with pytest.raises(UserError, match=r"--fine_tune_layers=2 is more than the 1 layers module "
                                        r".*; pass at most 1, or 0 for all of them"):
        pipeline.run(config)


def test_trainable_layers_groups_variables_by_layer_name():
    variables = [tf.Variable(1.0, name=name) for name in
                 ("stem/kernel", "stem/bias", "block0_depthwise/depthwise_kernel", "head/kernel")]
    groups = finetune.trainable_layers(variables)
    assert [name for name, _ in groups] == ["stem", "block0_depthwise", "head"]
    assert [len(group) for _, group in groups] == [2, 1, 1]


def test_fine_tune_layers_chooses_the_last_layers(tiny_module):
    module = modules.resolve_module(tiny_module)
    layer = modules.load_feature_extractor(module, trainable=True)
    assert len(finetune.FineTuneNetwork(layer, _zero_head(), 0).module_variables) == 1
    assert len(finetune.FineTuneNetwork(layer, _zero_head(), 1).module_variables) == 1


def test_training_order_is_shuffled_epochs_and_stable_when_steps_grow():
    order = finetune_data.training_order(10, steps=7, batch_size=3, seed=5)
    assert order.shape == (7, 3)
    flat = order.reshape(-1)
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    np.testing.assert_array_equal(finetune_data.training_order(10, 4, 3, seed=5), order[:4])
    assert not np.array_equal(finetune_data.training_order(10, 7, 3, seed=6), order)


def test_distorted_batches_depend_only_on_seed_and_step(colour_images):
    from retrain.data import distortion_settings  # pylint: disable=import-outside-toplevel
    image_files = dataset.find_images(colour_images).images
    labels = np.array([image.label_index for image in image_files])
    order = finetune_data.training_order(len(image_files), steps=3, batch_size=4, seed=0)
    distortions = distortion_settings.Distortions(flip_left_right=True, random_crop=20,
                                                  random_brightness=30)

    def batch(step, first_step, seed=0, distort=distortions):
        batches, _ = finetune_data.training_batches(image_files, labels, order, first_step,
                                                    (32, 32), 10**8, distort, seed)
        return list(batches)[step - first_step][0].numpy()

    np.testing.assert_array_equal(batch(2, 0), batch(2, 1))  # the same when resumed at step 1
    assert not np.array_equal(batch(2, 0), batch(2, 0, seed=1))
    assert not np.array_equal(batch(2, 0), batch(2, 0, distort=None))


def test_fine_tune_flags_reach_the_config():
    config = retrain_command.config_from_flags(_parsed([
        "retrain", "--image_dir=p", "--fine_tune", "--fine_tune_steps=7",
        "--fine_tune_learning_rate=0.002", "--fine_tune_momentum=0.5", "--fine_tune_batch_size=4",
        "--fine_tune_eval_interval=3", "--fine_tune_layers=2"]))
    assert config.fine_tune and config.fine_tune_steps == 7
    assert (config.fine_tune_learning_rate, config.fine_tune_momentum) == (0.002, 0.5)
    assert (config.fine_tune_batch_size, config.fine_tune_eval_interval) == (4, 3)
    assert config.fine_tune_layers == 2
    assert not retrain_command.config_from_flags(_parsed(["retrain", "--image_dir=p"])).fine_tune


def _parsed(argv):
    flag_values = flags.FlagValues()
    retrain_command.define_flags(flag_values)
    flag_values(argv)
    return flag_values


def test_compare_has_a_fine_tuned_row(tmp_path, tiny_module, colour_images):
    base = fast_config(colour_images, tiny_module, tmp_path, fine_tune_steps=10,
                       fine_tune_eval_interval=5)
    (fine_tuned,) = compare.compare(base, [tiny_module], ["fine_tuned"], str(tmp_path / "compare"))
    assert fine_tuned.method == "fine_tuned"
    assert fine_tuned.error == "" and fine_tuned.test_top1_accuracy == 1.0
    with open(os.path.join(fine_tuned.output_dir, "metrics.json"), encoding="utf-8") as metrics:
        assert json.load(metrics)["fine_tune"]["history"]["steps"] == [0, 5, 9]


def test_a_corrupt_fine_tuning_checkpoint_is_a_one_line_error(tmp_path):
    # A truncated .npz is a zipfile.BadZipFile, not an OSError: it must still become a UserError.
    (tmp_path / finetune_checkpoint.LATEST_FILE).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="Cannot read the fine-tuning checkpoint .*drop --resume"):
        finetune_checkpoint.load_latest(str(tmp_path), {})
