"""The Python API: retrain.train, retrain.load, retrain.Model, as a notebook uses them."""

import json
import os

import numpy as np
from PIL import Image
import pytest

import retrain

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def trained(tiny_module, colour_images, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("api") / "out"
    return retrain.train(colour_images, output_dir=output_dir, tfhub_module=tiny_module,
                         how_many_training_steps=150, learning_rate=0.1, eval_step_interval=50,
                         validation_batch_size=-1)


def test_train_returns_the_paths_it_wrote_and_the_test_accuracy(trained):
    assert trained.labels == ["blue", "green", "red"]
    for path in (trained.saved_model_dir, trained.labels_file, trained.metrics_file,
                 trained.report_file):
        assert os.path.exists(path), path
    with open(trained.metrics_file, encoding="utf-8") as metrics_file:
        assert json.load(metrics_file) == trained.metrics
    assert trained.metrics["test_top1_accuracy"] == trained.test_accuracy == 1.0
    assert trained.test_count == trained.metrics["test_count"] > 0


def test_load_predicts_files_and_arrays_alike(trained, colour_images):
    model = retrain.load(trained.saved_model_dir)
    assert model.labels == trained.labels
    green = os.path.join(colour_images, "green")
    paths = sorted(os.path.join(green, name) for name in os.listdir(green))[:3]
    from_files = model.predict(paths)
    assert from_files.shape == (3, 3) and from_files.dtype == np.float32
    np.testing.assert_allclose(from_files.sum(axis=1), 1.0, atol=1e-5)
    arrays = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    np.testing.assert_allclose(model.predict(arrays), from_files, atol=1e-5)
    assert [row[0][0] for row in model.top(paths, count=2)] == ["green"] * 3
    assert len(model.top(paths[0], count=2)[0]) == 2


def test_a_bad_setting_or_image_is_a_user_error(trained, tmp_path, colour_images):
    with pytest.raises(retrain.UserError, match=r"Unknown setting 'how_many_steps'"):
        retrain.train(colour_images, output_dir=tmp_path, how_many_steps=10)
    with pytest.raises(retrain.UserError, match=r"--image_dir .* does not exist"):
        retrain.train(tmp_path / "missing", output_dir=tmp_path / "out")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    model = retrain.load(trained.saved_model_dir)
    with pytest.raises(retrain.UserError, match=r"Cannot label .*broken.jpg"):
        model.predict([str(broken)])
    with pytest.raises(retrain.UserError, match=r"pass uint8 arrays"):
        model.predict([np.zeros([4, 4], np.float32)])


def test_the_config_type_is_the_commands_settings():
    config = retrain.RetrainConfig(image_dir="photos")
    assert config.resolved().saved_model_dir == os.path.join("retrain_output", "saved_model")


def test_predict_says_which_images_are_unknown_and_top_lists_unknown_first(trained, tmp_path,
                                                                           colour_images):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from retrain.export import layout  # pylint: disable=import-outside-toplevel
    model = retrain.load(trained.saved_model_dir)
    threshold = model.unknown_threshold
    assert threshold is not None and np.isfinite(threshold)
    red = os.path.join(colour_images, "red")
    known = sorted(os.path.join(red, name) for name in os.listdir(red))[:2]
    # A black image: the tiny module's features are all zero, so every logit is a bias and
    # the largest is far below a trained colour's; a max-logit score calls it unknown.
    black = tmp_path / "black.png"
    Image.new("RGB", (40, 30), (0, 0, 0)).save(black)
    paths = known + [str(black)]
    probabilities, scores, unknown = model.predict(paths, return_unknown=True)
    assert probabilities.shape == (3, 3) and scores.shape == (3,) and scores.dtype == np.float32
    np.testing.assert_array_equal(unknown, scores > threshold)
    assert unknown[2]  # (a red image may score above it too: 5% of validation images do)
    np.testing.assert_allclose(model.predict(paths), probabilities)
    # The same scores as the exported SavedModel's own output.
    exported = tf.saved_model.load(layout.find_saved_model(trained.saved_model_dir))
    pixels = np.stack([np.asarray(Image.open(path).convert("RGB").resize((32, 32),
                                                                          Image.BILINEAR))
                       for path in paths]).astype(np.float32) / 255
    outputs = exported.signatures["serving_default"](image=tf.constant(pixels))
    assert outputs["unknown_score"].shape == (3,)
    np.testing.assert_allclose(outputs["unknown_score"].numpy(), scores, atol=1e-4)
    top = model.top(paths, count=2)
    for row, is_unknown, score in zip(top, unknown, scores):
        assert len(row) == 2 + is_unknown
        assert (row[0] == ("unknown", pytest.approx(float(score)))) == is_unknown
    assert [row[int(unknown[index])][0] for index, row in enumerate(top[:2])] == ["red", "red"]
