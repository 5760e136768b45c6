"""The exported SavedModel and label_image: reload, both signatures, output formats."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from retrain import pipeline
from retrain.cli import label_image_command
from retrain.data import images
from retrain.data import preprocess
from retrain.errors import UserError
from retrain.predict import label_image
from tests.conftest import fast_config, interrupt_while_tensorflow_loads


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_module, colour_images):
    output_dir = tmp_path_factory.mktemp("export") / "out"
    pipeline.run(fast_config(colour_images, tiny_module, output_dir))
    return str(output_dir / "saved_model")


def _some_images(colour_images):
    return [os.path.join(colour_images, label, f"{label}_{index:03d}.{extension}")
            for label in ("blue", "green", "red") for index, extension in ((0, "jpg"), (1, "png"))]


def test_saved_model_carries_labels_and_size(exported):
    classifier = label_image.load_classifier(exported)
    assert classifier.labels == ["blue", "green", "red"]
    assert classifier.image_size == (32, 32)


def test_saved_model_is_in_a_version_folder_for_tf_serving(exported):
    assert os.path.isfile(os.path.join(exported, "1", "saved_model.pb"))
    assert not os.path.exists(os.path.join(exported, "saved_model.pb"))
    # label_image takes the version folder as well as the base folder.
    assert label_image.load_classifier(os.path.join(exported, "1")).labels == ["blue", "green", "red"]


def test_both_signatures_agree(exported, colour_images):
    model = tf.saved_model.load(os.path.join(exported, "1"))
    paths = _some_images(colour_images)
    # PNG decodes identically in Pillow and TensorFlow, so the two paths must agree closely.
    png_paths = [path for path in paths if path.endswith(".png")]
    floats = np.stack([preprocess.resize_for_module(images.read_image_file(path), (32, 32)).numpy()
                       for path in png_paths])
    from_floats = model.signatures["serving_default"](image=tf.constant(floats))["prediction"].numpy()
    encoded = tf.constant([open(path, "rb").read() for path in png_paths])
    from_bytes = model.signatures["serving_bytes"](image_bytes=encoded)["prediction"].numpy()
    np.testing.assert_allclose(from_floats, from_bytes, atol=1e-5)
    assert from_floats.shape == (3, 3)
    np.testing.assert_allclose(from_floats.sum(axis=1), 1.0, atol=1e-5)
    for outputs in (model.signatures["serving_default"](image=tf.constant(floats)),
                    model.signatures["serving_bytes"](image_bytes=encoded)):
        assert sorted(outputs) == ["prediction", "top_classes", "top_scores", "unknown_score"]
        assert outputs["unknown_score"].shape == (3,)
        # Three classes: K = min(5, 3); names in the order of the scores.
        assert outputs["top_classes"].shape == (3, 3)
        order = np.argsort(-from_floats, axis=1)
        names = np.array([b"blue", b"green", b"red"])
        np.testing.assert_array_equal(outputs["top_classes"].numpy(), names[order])
        np.testing.assert_allclose(outputs["top_scores"].numpy(),
                                   np.take_along_axis(from_floats, order, axis=1), atol=1e-5)
    numeric = model.signatures["serving_numeric"](image=tf.constant(floats))
    assert sorted(numeric) == ["prediction", "unknown_score"]
    np.testing.assert_allclose(numeric["prediction"].numpy(), from_floats, atol=1e-6)


def test_labels_the_training_colours_correctly(exported, colour_images):
    classifier = label_image.load_classifier(exported)
    paths = _some_images(colour_images)
    predictions = list(label_image.classify_files(classifier, paths, batch_size=4))
    top = [label_image.top_predictions(prediction, classifier.labels, 1)[0][0]
           for prediction in predictions]
    assert top == ["blue", "blue", "green", "green", "red", "red"]


def _run_label_image(*args):
    return subprocess.run([sys.executable, "-m", "retrain.cli.label_image_command", *args],
                          capture_output=True, text=True, check=False)


def test_label_image_json_matches_in_process_prediction(exported, colour_images, tmp_path):
    paths = _some_images(colour_images)[:2]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    completed = _run_label_image(f"--saved_model_dir={exported}", "--output_format=json",
                                 "--num_top_predictions=2", "--image", paths[0], paths[1], str(broken))
    assert completed.returncode == 1, completed.stderr
    records = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [record["path"] for record in records] == [*paths, str(broken)]
    assert "cannot decode" in records[2]["error"] and "broken.jpg" in completed.stderr
    classifier = label_image.load_classifier(exported)
    for record, prediction in zip(records, label_image.classify_files(classifier, paths)):
        expected = label_image.top_predictions(prediction, classifier.labels, 2)
        assert record["labels"] == [label for label, _ in expected]
        np.testing.assert_allclose(record["scores"], [score for _, score in expected], atol=1e-5)


def test_label_image_text_format_for_a_folder(exported, colour_images):
    completed = _run_label_image(f"--saved_model_dir={exported}", f"--image_dir={colour_images}",
                                 "--num_top_predictions=3")
    assert completed.returncode == 0, completed.stderr
    blocks = completed.stdout.strip().split("\n")
    # A path line, "unknown <score>" if the image is unknown, three "label score" lines.
    unknown = [index for index, line in enumerate(blocks) if line.startswith("unknown ")]
    assert len(blocks) == 36 * 4 + len(unknown)
    assert all(os.path.isfile(blocks[index - 1]) for index in unknown)  # right after the path
    label, score = blocks[1].rsplit(" ", 1)
    assert label in ("blue", "green", "red") and 0.0 <= float(score) <= 1.0


def test_label_image_single_image_prints_retrain_py_lines(exported, colour_images):
    # A threshold no score reaches: the 12-image colour classes make a loose threshold, and
    # this test is about the label lines (the "unknown" line: the tests below).
    completed = _run_label_image(f"--saved_model_dir={exported}", "--unknown_threshold=1e30",
                                 f"--image={_some_images(colour_images)[4]}")
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("red ")
    scores = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert scores == sorted(scores, reverse=True)


def test_model_not_made_by_retrain_is_refused(tiny_module):
    with pytest.raises(UserError, match=r"was not made by retrain"):
        label_image.load_classifier(tiny_module)


def test_missing_saved_model_dir_is_one_line_error(tmp_path):
    completed = _run_label_image(f"--saved_model_dir={tmp_path / 'nothing'}", "--image=x.jpg")
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1].startswith("label_image: error: --saved_model_dir")


def test_no_images_given():
    with pytest.raises(UserError, match="No images given"):
        label_image_command.image_paths([], None, [])


def test_label_image_ctrl_c_while_tensorflow_loads_is_a_one_line_message(tmp_path):
    # Enough to pass the checks made before TensorFlow is imported.
    (tmp_path / "saved_model").mkdir()
    (tmp_path / "saved_model" / "saved_model.pb").write_bytes(b"")
    status, lines = interrupt_while_tensorflow_loads(
        "retrain.cli.label_image_command", f"--saved_model_dir={tmp_path / 'saved_model'}",
        str(tmp_path / "photo.jpg"))
    assert status == 130
    assert lines[-1] == "label_image: error: Interrupted.\n", lines[-3:]


def test_unknown_threshold_overrides_the_exported_one(exported, colour_images):
    paths = _some_images(colour_images)
    everything = _run_label_image(f"--saved_model_dir={exported}", "--output_format=json",
                                  "--unknown_threshold=-1e30", "--image", *paths)
    nothing = _run_label_image(f"--saved_model_dir={exported}", "--output_format=json",
                               "--unknown_threshold=1e30", "--image", *paths)
    for completed, expected in ((everything, True), (nothing, False)):
        assert completed.returncode == 0, completed.stderr
        records = [json.loads(line) for line in completed.stdout.splitlines()]
        assert [record["unknown"] for record in records] == [expected] * len(paths)
        assert all(isinstance(record["unknown_score"], float) for record in records)
    text = _run_label_image(f"--saved_model_dir={exported}", "--unknown_threshold=-1e30",
                            "--image", paths[0])
    assert text.stdout.splitlines()[0].startswith("unknown ")
    # The exported threshold keeps 95% of validation known: in-process, the same numbers.
    classifier = label_image.load_classifier(exported)
    assert classifier.unknown_threshold < float("inf")
    predictions = list(label_image.classify_files(classifier, paths))
    assert all(p.unknown == (p.unknown_score > classifier.unknown_threshold) for p in predictions)


def test_format_1_export_still_labels_without_unknown(tiny_module, tmp_path, colour_images):
    """An export from before issue 25 (no version folder, no unknown score) still labels."""
    from retrain.features import modules  # pylint: disable=import-outside-toplevel
    from retrain.training import train  # pylint: disable=import-outside-toplevel

    class FormatOne(tf.Module):
        def __init__(self, extractor, head):
            super().__init__()
            self.extractor = extractor
            self.weights = tf.Variable(head.weights)
            self.labels = tf.Variable([b"blue", b"green", b"red"])
            self.image_size = tf.Variable([32, 32])
            self.retrain_format_version = tf.Variable(1)

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def classify_images(self, image):
            return {"prediction": tf.nn.softmax(tf.matmul(self.extractor(image), self.weights))}

    head = train.Head(np.random.default_rng(0).normal(0, 1, (6, 3)).astype(np.float32),
                      np.zeros(3, np.float32))
    old = FormatOne(modules.load_feature_extractor(modules.resolve_module(tiny_module)), head)
    tf.saved_model.save(old, str(tmp_path / "old"))
    completed = _run_label_image(f"--saved_model_dir={tmp_path / 'old'}", "--output_format=json",
                                 "--image", _some_images(colour_images)[0])
    assert completed.returncode == 0, completed.stderr
    record = json.loads(completed.stdout)
    assert record["unknown"] is None and record["unknown_score"] is None
    assert len(record["labels"]) == 3
