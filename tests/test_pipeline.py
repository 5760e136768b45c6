"""End to end through the library: find, cache, train, evaluate, export, reload."""

import json
import os

import numpy as np
import pytest

from retrain import pipeline
from retrain.errors import UserError
from tests.conftest import fast_config, write_noise_images


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_module, colour_images):
    output_dir = tmp_path_factory.mktemp("trained") / "out"
    result = pipeline.run(fast_config(colour_images, tiny_module, output_dir))
    return result, output_dir


def test_solid_colours_train_to_high_accuracy(trained):
    result, _ = trained
    assert result.test.count >= 3
    assert result.test.top1_accuracy >= 0.9
    assert result.history.validation_accuracy[-1] >= 0.9


def test_noise_classes_do_not_train(tmp_path, tiny_module):
    folder = write_noise_images(tmp_path / "noise", per_class=30)
    result = pipeline.run(fast_config(folder, tiny_module, tmp_path / "out",
                                      validation_percentage=30, testing_percentage=30))
    assert result.test.top1_accuracy < 0.75


def test_everything_is_written_under_output_dir(trained):
    result, output_dir = trained
    assert sorted(os.listdir(output_dir)) == [
        "audit.html", "audit.json", "bottlenecks", "checkpoints", "confusion_matrix.png",
        "metrics.json", "output_labels.txt", "reliability.png", "report.html", "saved_model",
        "summaries", "training_curves.png", "training_log.txt"]
    assert os.listdir(output_dir / "saved_model") == ["1"]  # TF Serving's version folder
    assert (output_dir / "output_labels.txt").read_text() == "blue\ngreen\nred\n"
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["labels"] == result.labels
    assert metrics["test_top1_accuracy"] == pytest.approx(result.test.top1_accuracy)
    assert sorted(os.listdir(output_dir / "summaries")) == ["test", "train", "validation"]


def test_second_run_computes_no_bottlenecks_and_changed_image_is_recomputed(
        tmp_path, tiny_module, fresh_colour_images):
    config = fast_config(fresh_colour_images, tiny_module, tmp_path / "out")
    assert pipeline.run(config).bottlenecks_computed == 36
    assert pipeline.run(config).bottlenecks_computed == 0
    changed = os.path.join(fresh_colour_images, "red", "red_001.png")
    with open(changed, "ab") as image_file:
        image_file.write(b"\0")  # Same pixels, new bytes: a different content key.
    assert pipeline.run(config).bottlenecks_computed == 1


def test_another_module_gets_its_own_cache(tmp_path, tiny_module, colour_images):
    shared_cache = tmp_path / "cache"
    pipeline.run(fast_config(colour_images, tiny_module, tmp_path / "a", bottleneck_dir=shared_cache))
    from tests.conftest import build_tiny_module  # pylint: disable=import-outside-toplevel
    other = build_tiny_module(tmp_path / "other_module", image_size=24)
    result = pipeline.run(fast_config(colour_images, other, tmp_path / "b", bottleneck_dir=shared_cache))
    assert result.bottlenecks_computed == 36
    assert len(os.listdir(shared_cache)) == 2


def test_module_without_declared_size_needs_image_size(tmp_path, colour_images):
    from tests.conftest import build_tiny_module  # pylint: disable=import-outside-toplevel
    module = build_tiny_module(tmp_path / "any_size", declare_size=False)
    with pytest.raises(UserError, match=r"does not declare its input size; pass --image_size"):
        pipeline.run(fast_config(colour_images, module, tmp_path / "out"))
    result = pipeline.run(fast_config(colour_images, module, tmp_path / "out", image_size=(20, 20)))
    assert result.test.top1_accuracy >= 0.9


def test_image_size_that_contradicts_module_is_a_user_error(tmp_path, tiny_module, colour_images):
    with pytest.raises(UserError, match=r"--image_size=64x64 does not fit module .* takes 32x32"):
        pipeline.run(fast_config(colour_images, tiny_module, tmp_path / "out", image_size=(64, 64)))


def test_missing_module_folder_is_a_user_error(tmp_path, colour_images):
    with pytest.raises(UserError, match=r"--tfhub_module '/nonexistent/module' is not a folder"):
        pipeline.run(fast_config(colour_images, "/nonexistent/module", tmp_path / "out"))


def test_run_is_repeatable(tmp_path, tiny_module, colour_images):
    first = pipeline.run(fast_config(colour_images, tiny_module, tmp_path / "a"))
    second = pipeline.run(fast_config(colour_images, tiny_module, tmp_path / "b"))
    assert first.history.cross_entropy == second.history.cross_entropy
    assert np.isclose(first.test.top1_accuracy, second.test.top1_accuracy)


def test_logs_retrain_py_lines_and_misclassified_listing(tmp_path, tiny_module, colour_images, caplog):
    caplog.set_level("INFO", logger="absl")
    config = fast_config(colour_images, tiny_module, tmp_path / "out", how_many_training_steps=21,
                         eval_step_interval=10, learning_rate=0.001,
                         print_misclassified_test_images=True, verbose=True)
    pipeline.run(config)
    messages = [record.getMessage() for record in caplog.records]
    for step in (0, 10, 20):
        assert any(f": Step {step}: Train accuracy = " in message for message in messages)
        assert any(f": Step {step}: Cross entropy = " in message for message in messages)
        assert any(f": Step {step}: Validation accuracy = " in message and "(N=" in message
                   for message in messages)
    assert not any(": Step 5:" in message for message in messages)
    assert any(message.startswith("Final test accuracy = ") for message in messages)
    # With a tiny learning rate some test images are wrong, and each is listed.
    listing = messages.index("=== MISCLASSIFIED TEST IMAGES ===")
    assert len(messages) > listing + 1
    event_files = os.listdir(tmp_path / "out" / "summaries" / "train")
    assert any(name.startswith("events.out.tfevents") for name in event_files)


@pytest.mark.timeout(300)
def test_fine_tuned_run_fits_calibration_and_unknown_on_the_fine_tuned_features(
        tmp_path, tiny_module, colour_images):
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from retrain.data import dataset
    from retrain.data import split
    from retrain.export import layout
    from retrain.features import modules
    from retrain.training import calibration
    from retrain.training import finetune_data
    from retrain.training import novelty

    # learning_rate=0 leaves the new layer near zero, so fine-tuning moves the module a lot.
    config = fast_config(colour_images, tiny_module, tmp_path / "out", learning_rate=0.0,
                         fine_tune=True, fine_tune_steps=30, fine_tune_eval_interval=10,
                         fine_tune_learning_rate=0.05, fine_tune_batch_size=8)
    result = pipeline.run(config)
    with open(config.resolved().metrics_file, encoding="utf-8") as metrics_file:
        unknown = json.load(metrics_file)["unknown"]
    assert unknown["features_recomputed"] is True and unknown["method"] == "max_logit"
    exported = tf.saved_model.load(layout.find_saved_model(config.resolved().saved_model_dir))

    collection = dataset.find_images(colour_images)
    validation = split.split_images(collection.images, collection.labels,
                                    config.validation_percentage,
                                    config.testing_percentage)["validation"]
    labels = np.array([image.label_index for image in validation])
    assert unknown["validation_count"] == len(validation) > 0

    def fitted(extractor):
        """(threshold, temperature) fitted on the validation images through extractor."""
        features, ok = finetune_data.apply_to_images(
            lambda images: extractor(images, training=False), validation, (32, 32), 8, 10**8)
        assert ok.all()
        logits = calibration.logits(features, result.fine_tune.head)
        return (novelty.choose_threshold(-logits.max(axis=1), config.unknown_known_share),
                calibration.fit_temperature(logits, labels))

    threshold, temperature = fitted(result.fine_tune.feature_extractor)
    assert float(exported.unknown_threshold.numpy()) == pytest.approx(threshold, rel=1e-4)
    assert unknown["threshold"] == pytest.approx(threshold, rel=1e-4)
    assert float(exported.temperature.numpy()) == pytest.approx(temperature, rel=1e-3)
    # Fitted on the frozen module's features (the cached bottlenecks), the threshold would
    # differ. (The temperature of solid colours sits at its lower bound either way.)
    frozen_threshold, _ = fitted(
        modules.load_feature_extractor(modules.resolve_module(tiny_module)))
    assert abs(frozen_threshold - threshold) > 1e-3
