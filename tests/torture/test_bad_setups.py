"""Torture: bad setups fail with one message naming the value and the fix, and write nothing."""

import os
import subprocess
import sys

import pytest

from conftest import fast_config, write_solid_colour_images
from retrain import pipeline
from retrain.errors import UserError
from retrain.predict import label_image
import processes
import torture_images as make


def files_under(folder):
    """Every path under folder (empty if it does not exist)."""
    found = []
    for root, dir_names, file_names in os.walk(folder):
        found += [os.path.join(root, name) for name in dir_names + file_names]
    return found


def assert_fails_writing_nothing(config, match, watched):
    """Runs the pipeline, expects a UserError matching `match`, and checks nothing was written."""
    with pytest.raises(UserError, match=match):
        pipeline.run(config)
    for folder in watched:
        assert files_under(folder) == [], f"{folder} was written to"


@pytest.fixture(scope="module")
def spatial_module(tmp_path_factory):
    """A SavedModel that returns a feature map [batch, 32, 32, 2], not a feature vector."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tf_keras  # pylint: disable=import-outside-toplevel
    inputs = tf_keras.Input([32, 32, 3])
    path = str(tmp_path_factory.mktemp("spatial") / "module")
    tf.saved_model.save(tf_keras.Model(inputs, tf_keras.layers.Conv2D(2, 1)(inputs)), path)
    return path


@pytest.fixture(scope="module")
def big_kernel_module(tmp_path_factory):
    """A module of any input size that needs at least 8x8 pixels (an 8x8 valid convolution)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tf_keras  # pylint: disable=import-outside-toplevel
    inputs = tf_keras.Input([None, None, 3])
    features = tf_keras.layers.GlobalAveragePooling2D()(tf_keras.layers.Conv2D(4, 8)(inputs))
    path = str(tmp_path_factory.mktemp("kernel") / "module")
    tf.saved_model.save(tf_keras.Model(inputs, features), path)
    return path


def two_classes(folder, per_class=3):
    return write_solid_colour_images(folder, {"red": make.RED, "blue": make.BLUE}, per_class)


def test_missing_image_dir(tmp_path, tiny_module):
    out = tmp_path / "out"
    assert_fails_writing_nothing(fast_config(tmp_path / "nope", tiny_module, out),
                                 r"--image_dir '.*nope' does not exist", [out])


def test_unset_image_dir(tmp_path, tiny_module):
    out = tmp_path / "out"
    assert_fails_writing_nothing(fast_config("", tiny_module, out), "Must set flag --image_dir", [out])


def test_empty_image_dir(tmp_path, tiny_module):
    (tmp_path / "photos").mkdir()
    out = tmp_path / "out"
    assert_fails_writing_nothing(fast_config(tmp_path / "photos", tiny_module, out),
                                 "No valid folders of images found at .*photos", [out])


def test_only_one_class(tmp_path, tiny_module):
    image_dir = write_solid_colour_images(tmp_path / "photos", {"red": make.RED}, 3)
    out = tmp_path / "out"
    assert_fails_writing_nothing(fast_config(image_dir, tiny_module, out),
                                 "Only one valid folder of images .*'red'.* add a subfolder", [out])


def test_class_folder_without_images(tmp_path, tiny_module):
    image_dir = two_classes(tmp_path / "photos")
    make.write_bytes(os.path.join(image_dir, "green", "readme.txt"), b"photos to come\n")
    out = tmp_path / "out"
    assert_fails_writing_nothing(fast_config(image_dir, tiny_module, out),
                                 "Class folder '.*green' has no usable images", [out])


def test_class_folder_whose_images_all_fail_to_decode(tmp_path, tiny_module):
    # Only decoding can tell these apart from photos, so the cache of the good classes is
    # kept (it is valid work), but no model, labels or metrics may appear.
    image_dir = two_classes(tmp_path / "photos")
    for index in range(3):
        make.write_bytes(os.path.join(image_dir, "green", f"{index}.jpg"), make.truncated_jpeg())
    out = tmp_path / "out"
    with pytest.raises(UserError, match="Class folder '.*green' has no usable images"):
        pipeline.run(fast_config(image_dir, tiny_module, out))
    leftovers = {os.path.relpath(path, out).split(os.sep)[0] for path in files_under(out)}
    assert leftovers <= {"bottlenecks"}


def test_classes_too_small_for_the_split(tmp_path, tiny_module):
    image_dir = two_classes(tmp_path / "photos", per_class=2)
    out = tmp_path / "out"
    assert_fails_writing_nothing(fast_config(image_dir, tiny_module, out),
                                 "Class '.*' has 2 usable image.*--validation_percentage=0", [out])


@pytest.mark.parametrize("flag", ["output_dir", "bottleneck_dir", "summaries_dir", "saved_model_dir",
                                  "output_labels", "metrics_file"])
def test_output_path_under_a_file(tmp_path, colour_images, tiny_module, flag):
    # A path below an ordinary file can never be created, even by root.
    blocker = tmp_path / "a_file"
    blocker.write_text("I am a file\n")
    overrides = {flag: str(blocker / "sub" / "x")} if flag != "output_dir" else {}
    out = blocker / "out" if flag == "output_dir" else tmp_path / "out"
    with pytest.raises(UserError, match=f"Cannot write to .*a_file.* --{flag}"):
        pipeline.run(fast_config(colour_images, tiny_module, out, **overrides))
    assert files_under(tmp_path) == [str(blocker)]


@pytest.mark.parametrize("module_path, match", [
    ("{tmp}/no_such_module", "--tfhub_module '.*no_such_module' is not a folder"),
    ("{tmp}/empty_folder", "--tfhub_module '.*empty_folder' is not a loadable SavedModel"),
])
def test_module_path_that_is_not_a_module(tmp_path, colour_images, module_path, match):
    (tmp_path / "empty_folder").mkdir()
    out = tmp_path / "out"
    config = fast_config(colour_images, module_path.format(tmp=tmp_path), out)
    assert_fails_writing_nothing(config, match, [out])


def test_module_that_returns_a_feature_map(tmp_path, colour_images, spatial_module):
    out = tmp_path / "out"
    assert_fails_writing_nothing(fast_config(colour_images, spatial_module, out),
                                 "is not an image feature-vector module", [out])


def test_image_size_that_does_not_fit_the_module(tmp_path, colour_images, tiny_module):
    out = tmp_path / "out"
    assert_fails_writing_nothing(fast_config(colour_images, tiny_module, out, image_size=(64, 64)),
                                 "--image_size=64x64 does not fit .* drop --image_size", [out])


def test_image_size_the_module_rejects(tmp_path, colour_images, big_kernel_module):
    out = tmp_path / "out"
    assert_fails_writing_nothing(fast_config(colour_images, big_kernel_module, out, image_size=(4, 4)),
                                 "(?s)rejects 4x4 images.*--image_size", [out])


def test_label_image_on_a_model_retrain_did_not_make(tiny_module):
    with pytest.raises(UserError, match="was not made by retrain .*'labels'"):
        label_image.load_classifier(tiny_module)


def test_label_image_on_a_model_missing_its_labels(tmp_path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    model = tf.Module()
    model.image_size = tf.Variable([32, 32])
    model.retrain_format_version = tf.Variable(1)
    model.classify_images = tf.function(lambda image: {"prediction": image[:, 0, 0, :]},
                                        input_signature=[tf.TensorSpec([None, 32, 32, 3])])
    tf.saved_model.save(model, str(tmp_path / "model"))
    with pytest.raises(UserError, match="has no 'labels'"):
        label_image.load_classifier(str(tmp_path / "model"))


@pytest.mark.parametrize("make_path, match", [
    (lambda tmp: tmp / "missing", "does not exist"),
    (lambda tmp: tmp, "is not a SavedModel"),
])
def test_label_image_on_a_folder_that_is_not_a_model(tmp_path, make_path, match):
    with pytest.raises(UserError, match=match):
        label_image.load_classifier(str(make_path(tmp_path)))


def run_cli(args, **kwargs):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          env=processes.cli_environment(), timeout=120, **kwargs)


def error_lines(stderr, program):
    """The lines a tool printed as its own errors (TensorFlow's C++ start-up lines aside)."""
    return [line for line in stderr.splitlines() if line.startswith(f"{program}: error:")]


def test_cli_prints_one_line_and_exits_non_zero(tmp_path, tiny_module):
    image_dir = two_classes(tmp_path / "photos", per_class=2)
    out = tmp_path / "out"
    completed = run_cli(["retrain", f"--image_dir={image_dir}", f"--output_dir={out}",
                         f"--tfhub_module={tiny_module}"])
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert len(error_lines(completed.stderr, "retrain")) == 1, completed.stderr
    assert "--validation_percentage=0" in completed.stderr
    assert files_under(out) == []


def test_label_image_cli_prints_one_line_for_a_foreign_model(tmp_path, tiny_module):
    image = make.write_bytes(str(tmp_path / "a.png"), make.encode(make.solid(), "PNG"))
    completed = run_cli(["retrain.cli.label_image_command", f"--saved_model_dir={tiny_module}",
                         f"--image={image}"])
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert len(error_lines(completed.stderr, "label_image")) == 1, completed.stderr
