"""TensorFlow Lite export: every quantization mode converts, loads and agrees with the SavedModel.

Tolerances, measured against the SavedModel's probabilities on all 36 colour images:
none agrees to 1e-5 (same float graph); dynamic and float16 to 1e-3 (the tiny module's
weights are too small for dynamic-range quantization to touch, float16 rounds them);
int8 must give the same top-1 label on at least 35 of 36 images (at most one borderline
image may flip) with probabilities within 0.05 (measured: 36/36, 0.002).
"""

import contextlib
import dataclasses
import glob
import json
import logging
import os
import subprocess
import sys
import threading

from absl import logging as absl_logging
import numpy as np
import pytest

from retrain import pipeline
from retrain.errors import UserError
from retrain.export import tflite_export
from retrain.export import tflite_settings
from retrain.evaluation import export_check
from retrain.predict import tflite_runtime
from retrain.predict import label_image
from tests.conftest import fast_config, parse_retrain_flags, write_solid_colour_images

MAX_PIXELS = 10 ** 8

MODES = [  # (quantization, int8_input, probability tolerance)
    ("none", "float32", 1e-5),
    ("dynamic", "float32", 1e-3),
    ("float16", "float32", 1e-3),
    ("int8", "float32", 0.05),
    ("int8", "uint8", 0.05),
]


@pytest.fixture(scope="module")
def run_with_tflite(tmp_path_factory, tiny_module, colour_images):
    """(RunResult, output_dir, log messages) of a run that also writes an int8 uint8 .tflite."""
    output_dir = tmp_path_factory.mktemp("tflite") / "out"
    config = fast_config(colour_images, tiny_module, output_dir,
                         tflite_output_file=str(output_dir / "lite" / "digits.tflite"),
                         tflite_quantization="int8", tflite_int8_input="uint8",
                         tflite_representative_images=5)
    with _absl_messages() as messages:
        result = pipeline.run(config)
    return result, output_dir, messages


@contextlib.contextmanager
def _absl_messages():
    """Collects absl's log messages (pytest's caplog is per test, the fixture is per module).

    Sets absl's verbosity rather than its logger's level: saving a SavedModel resets the
    logger to absl's verbosity flag (WARNING unless set), which would hide later INFO lines.
    """
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append((record.levelname, record.getMessage()))
    old_verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    logging.getLogger("absl").addHandler(handler)
    try:
        yield messages
    finally:
        logging.getLogger("absl").removeHandler(handler)
        absl_logging.set_verbosity(old_verbosity)


@pytest.fixture(scope="module")
def trained(run_with_tflite):
    """(saved_model_dir, labels) of a model trained on the colour images."""
    result, output_dir, _ = run_with_tflite
    return str(output_dir / "saved_model"), result.labels


@pytest.fixture(scope="module")
def all_images(colour_images):
    return sorted(glob.glob(os.path.join(colour_images, "*", "*")))


@pytest.fixture(scope="module")
def reference(trained, all_images):
    """The SavedModel's probabilities, float32 [36, 3], for all_images."""
    classifier = label_image.load_classifier(trained[0])
    return export_check.predict_files(classifier, all_images, 32, MAX_PIXELS)


@pytest.fixture(scope="module", params=MODES, ids=[f"{mode}-{kind}" for mode, kind, _ in MODES])
def converted(request, trained, all_images, tmp_path_factory):
    """A Converted model for one mode, converted once per test module."""
    quantization, int8_input, tolerance = request.param
    saved_model_dir, labels = trained
    representative = tflite_export.representative_dataset(all_images[::3], (32, 32), MAX_PIXELS)
    model_bytes = tflite_export.convert(saved_model_dir, quantization, int8_input, representative)
    path = str(tmp_path_factory.mktemp(quantization) / "model.tflite")
    tflite_export.write_tflite(model_bytes, path, labels)
    return Converted(tflite_runtime.load_classifier(path), path, quantization, int8_input, tolerance)


@dataclasses.dataclass
class Converted:
    classifier: tflite_runtime.TFLiteClassifier
    path: str
    quantization: str
    int8_input: str
    tolerance: float  # on probabilities, against the SavedModel


@pytest.fixture(scope="module")
def float_tflite(trained, tmp_path_factory):
    """Path of an unquantized .tflite, with its labels file beside it."""
    path = str(tmp_path_factory.mktemp("float") / "model.tflite")
    tflite_export.write_tflite(tflite_export.convert(trained[0], "none"), path, trained[1])
    # The SavedModel's unknown threshold, in the sidecar a run writes beside the .tflite.
    exported = label_image.load_classifier(trained[0])
    with open(tflite_settings.calibration_path_for(path), "w", encoding="utf-8") as sidecar:
        json.dump({"unknown_threshold": exported.unknown_threshold,
                   "temperature": exported.temperature}, sidecar)
    return path


def test_run_writes_evaluates_and_reports_the_tflite(run_with_tflite):
    result, output_dir, messages = run_with_tflite
    report = result.tflite
    assert sorted(os.listdir(output_dir / "lite")) == [
        "digits.tflite", "digits_calibration.json", "digits_labels.txt"]
    assert (output_dir / "lite" / "digits_labels.txt").read_text() == "blue\ngreen\nred\n"
    # The sidecar carries the SavedModel's threshold and temperature, and the runtime reads it.
    sidecar = json.loads((output_dir / "lite" / "digits_calibration.json").read_text())
    assert sidecar["unknown_threshold"] == pytest.approx(result.trust.detector.threshold)
    assert sidecar["temperature"] == pytest.approx(result.trust.temperature)
    assert sidecar["known_share"] == 0.95
    classifier = tflite_runtime.load_classifier(str(output_dir / "lite" / "digits.tflite"))
    assert classifier.has_unknown_score
    assert classifier.unknown_threshold == pytest.approx(sidecar["unknown_threshold"])
    assert report.size_bytes == os.path.getsize(output_dir / "lite" / "digits.tflite")
    assert report.saved_model_size_bytes > report.size_bytes
    assert (report.quantization, report.input_type) == ("int8", "uint8")
    assert report.test_count == result.test.count >= 3
    assert report.saved_model_test_top1_accuracy == pytest.approx(result.test.top1_accuracy)
    assert report.test_top1_accuracy >= 0.9 and report.top1_agreement_with_saved_model >= 0.9
    assert ("INFO", "Calibrating int8 quantization on 5 training images.") in messages
    assert any(level == "INFO" and text.startswith("TensorFlow Lite (int8, uint8 input): ")
               for level, text in messages)
    assert "tflite" in result.stage_seconds


def test_metrics_json_has_the_tflite_block_and_keeps_its_keys(run_with_tflite):
    result, output_dir, _ = run_with_tflite
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["test_top1_accuracy"] == pytest.approx(result.test.top1_accuracy)
    assert {"module", "labels", "test_count", "history", "stage_seconds"} <= set(metrics)
    assert metrics["tflite"] == json.loads(json.dumps(dataclasses.asdict(result.tflite)))
    assert metrics["tflite"]["file"].endswith("digits.tflite")


def test_run_without_tflite_writes_no_tflite_block(tmp_path, tiny_module, colour_images):
    result = pipeline.run(fast_config(colour_images, tiny_module, tmp_path / "out",
                                      how_many_training_steps=5))
    assert result.tflite is None
    assert "tflite" not in json.loads((tmp_path / "out" / "metrics.json").read_text())


def test_bad_tflite_settings_fail_before_any_work(tmp_path, tiny_module, colour_images):
    config = fast_config(colour_images, tiny_module, tmp_path / "out", tflite_quantization="int8")
    with pytest.raises(UserError, match="--tflite_quantization=int8 needs a file to write"):
        pipeline.run(config)
    assert not (tmp_path / "out").exists()


def test_each_mode_agrees_with_the_saved_model(converted, all_images, reference):
    probabilities = export_check.predict_files(converted.classifier, all_images, 32, MAX_PIXELS)
    assert probabilities.shape == (36, 3)
    same_top1 = np.sum(probabilities.argmax(axis=1) == reference.argmax(axis=1))
    assert same_top1 >= (35 if converted.quantization == "int8" else 36)
    np.testing.assert_allclose(probabilities, reference, atol=converted.tolerance)


def test_each_mode_reads_labels_and_size(converted, trained):
    assert converted.classifier.labels == trained[1]
    assert converted.classifier.image_size == (32, 32)
    with open(tflite_settings.labels_path_for(converted.path)) as labels_file:
        assert labels_file.read() == "blue\ngreen\nred\n"
    folder = os.path.dirname(converted.path)
    assert sorted(os.listdir(folder)) == ["model.tflite", "model_labels.txt"]  # No temporary files.


def test_batch_size_changes_between_calls(converted, all_images, reference):
    single = export_check.predict_files(converted.classifier, all_images[:5], 1, MAX_PIXELS)
    batched = export_check.predict_files(converted.classifier, all_images[:5], 4, MAX_PIXELS)
    np.testing.assert_allclose(single, batched, atol=1e-6)
    np.testing.assert_allclose(single, reference[:5], atol=converted.tolerance)


def _tensor_types(path):
    interpreter = tflite_runtime.make_interpreter(model_path=path)
    return {np.dtype(detail["dtype"]).name for detail in interpreter.get_tensor_details()}


def test_tensor_types_follow_the_mode(converted):
    interpreter = tflite_runtime.make_interpreter(model_path=converted.path)
    inputs, outputs = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    io_type = converted.int8_input if converted.quantization == "int8" else "float32"
    assert np.dtype(inputs["dtype"]).name == io_type == converted.classifier.input_type
    assert np.dtype(outputs["dtype"]).name == io_type
    types = {np.dtype(detail["dtype"]).name for detail in interpreter.get_tensor_details()}
    # The tiny module's weights are below dynamic-range quantization's size threshold, so
    # "dynamic" leaves them float32 here; on a real backbone its weights become int8.
    assert ("int8" in types) == (converted.quantization == "int8")
    assert ("float16" in types) == (converted.quantization == "float16")
    # A fully integer model: with uint8 input and output, no float tensor is left.
    assert ("float32" in types) == (io_type == "float32")
    if io_type == "uint8":
        # The pinned calibration range makes the input the plain 0..255 pixel value, although
        # the solid-colour images themselves never reach 0 or 255 in every channel.
        scale, zero_point = inputs["quantization"]
        assert scale == pytest.approx(1 / 255) and zero_point == 0


def test_int8_needs_a_representative_dataset(trained):
    with pytest.raises(ValueError, match="representative"):
        tflite_export.convert(trained[0], "int8")


@pytest.mark.parametrize("output_file, quantization, int8_input, message", [
    ("m.tflite", "int4", "float32",
     r"--tflite_quantization='int4' is not a mode; pass one of none"),
    ("m.tflite", "int8", "int16",
     r"--tflite_int8_input='int16' is not a type; pass float32 or uint8"),
    (None, "float16", "float32", r"--tflite_quantization=float16 needs a file to write; pass "
     r"--tflite_output_file"),
    (None, "none", "uint8", r"--tflite_int8_input needs --tflite_output_file"),
])
def test_bad_settings_are_user_errors(output_file, quantization, int8_input, message):
    with pytest.raises(UserError, match=message):
        tflite_settings.check_settings(output_file, quantization, int8_input)


def test_no_tflite_settings_is_fine():
    tflite_settings.check_settings(None, "none", "float32")


def test_missing_model_and_labels_are_user_errors(tmp_path, float_tflite):
    path = float_tflite
    with pytest.raises(UserError, match=r"--tflite_model '.*nothing.tflite' does not exist"):
        tflite_runtime.load_classifier(str(tmp_path / "nothing.tflite"))
    with pytest.raises(UserError, match=r"Labels file '.*missing.txt' does not exist; pass --lab"):
        tflite_runtime.load_classifier(path, str(tmp_path / "missing.txt"))


def test_labels_that_do_not_match_the_model_are_refused(tmp_path, float_tflite):
    path = float_tflite
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    with pytest.raises(UserError, match=r"has 2 labels but .* has 3 outputs"):
        tflite_runtime.load_classifier(path, str(labels))


def test_a_file_that_is_not_tflite_is_refused(tmp_path):
    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"not a flatbuffer at all" * 10)
    (tmp_path / "model_labels.txt").write_text("a\nb\n")
    with pytest.raises(UserError, match=r"is not a TensorFlow Lite model"):
        tflite_runtime.load_classifier(str(bogus))


def test_compare_predictions_counts_agreement_and_failed_images():
    truth = np.array([0, 1, 2, 2])
    reference = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]  # 3 of 4 right
    tflite = np.eye(3, dtype=np.float32)[[0, 2, 2, 1]]
    tflite[2] = np.nan  # An image the interpreter could not read counts as wrong.
    scores = export_check.compare_predictions(tflite, reference, truth)
    assert scores["test_top1_accuracy"] == pytest.approx(0.25)
    assert scores["saved_model_test_top1_accuracy"] == pytest.approx(0.75)
    assert scores["top1_agreement_with_saved_model"] == pytest.approx(0.5)
    assert scores["accuracy_drop_points"] == pytest.approx(50.0)


def _report(quantization, accuracy, reference_accuracy):
    return export_check.TFLiteReport(
        file="m.tflite", labels_file="m_labels.txt", quantization=quantization,
        input_type="float32", size_bytes=1000, saved_model_size_bytes=4000, test_count=200,
        test_top1_accuracy=accuracy, saved_model_test_top1_accuracy=reference_accuracy,
        top1_agreement_with_saved_model=0.97,
        accuracy_drop_points=round((reference_accuracy - accuracy) * 100, 4))


@pytest.mark.parametrize("quantization, accuracy, suggestion", [
    ("int8", 0.935, "dynamic or float16"),  # 1.5 points below.
    ("int8", 0.945, None),  # 0.5 points below.
    ("float16", 0.95, None),
    ("dynamic", 0.9, "float16"),
    ("none", 0.9, None),  # Not quantized: a loss here is not the user's choice to undo.
])
def test_warns_when_quantization_loses_more_than_a_point(caplog, quantization, accuracy,
                                                         suggestion):
    caplog.set_level("INFO", logger="absl")
    export_check.log_report(_report(quantization, accuracy, 0.95))
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == (1 if suggestion else 0)
    if suggestion:
        assert warnings[0].startswith(f"The {quantization}-quantized TensorFlow Lite model scores")
        assert f"N=200); if that matters, try --tflite_quantization={suggestion}," in warnings[0]


def test_representative_sample_is_seeded_and_keeps_order():
    paths = [f"image_{index:03d}.png" for index in range(500)]
    sample = tflite_export.sample_paths(paths, 100, seed=0)
    assert len(sample) == 100 and sample == sorted(sample)
    assert sample == tflite_export.sample_paths(paths, 100, seed=0)
    assert sample != tflite_export.sample_paths(paths, 100, seed=1)
    assert tflite_export.sample_paths(paths[:10], 100, seed=0) == paths[:10]


def test_tflite_flags_reach_the_config():
    config = parse_retrain_flags(["--tflite_output_file=m.tflite", "--tflite_quantization=int8",
                                   "--tflite_int8_input=uint8",
                                   "--tflite_representative_images=20"])
    assert (config.tflite_output_file, config.tflite_quantization) == ("m.tflite", "int8")
    assert (config.tflite_int8_input, config.tflite_representative_images) == ("uint8", 20)
    default = parse_retrain_flags([])
    assert (default.tflite_output_file, default.tflite_quantization) == (None, "none")


def test_unknown_quantization_flag_is_refused():
    from absl import flags  # pylint: disable=import-outside-toplevel
    with pytest.raises(flags.IllegalFlagValueError, match="int4"):
        parse_retrain_flags(["--tflite_quantization=int4"])


@pytest.mark.parametrize("output_format", ["text", "json"])
def test_label_image_prints_the_same_for_tflite_and_saved_model(
        capsys, trained, float_tflite, all_images, output_format):
    from retrain.cli import label_image_command  # pylint: disable=import-outside-toplevel
    paths = all_images[::6]
    label_image_command.label_files(paths, trained[0], output_format, 2, 4)
    from_saved_model = capsys.readouterr().out.splitlines()
    label_image_command.label_files(paths, None, output_format, 2, 4, tflite_model=float_tflite,
                                labels=tflite_settings.labels_path_for(float_tflite))
    from_tflite = capsys.readouterr().out.splitlines()
    # Path, "unknown" if it is, and 2 labels; or one JSON object.
    unknown = sum(line.startswith("unknown ") for line in from_saved_model)
    lines_per_image = 3 if output_format == "text" else 1
    assert len(from_tflite) == len(from_saved_model) == len(paths) * lines_per_image + unknown
    for tflite_line, saved_model_line in zip(from_tflite, from_saved_model):
        if output_format == "json":
            tflite_line, saved_model_line = json.loads(tflite_line), json.loads(saved_model_line)
            assert tflite_line["path"] == saved_model_line["path"]
            assert tflite_line["labels"] == saved_model_line["labels"]
            assert tflite_line["unknown"] == saved_model_line["unknown"]
            np.testing.assert_allclose(tflite_line["unknown_score"],
                                       saved_model_line["unknown_score"], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(tflite_line["scores"], saved_model_line["scores"], atol=1e-5)
        else:
            assert tflite_line.split(" ")[:-1] == saved_model_line.split(" ")[:-1]


def test_label_image_command_takes_tflite_model_and_labels(float_tflite, all_images):
    completed = subprocess.run(
        [sys.executable, "-m", "retrain.cli.label_image_command", f"--tflite_model={float_tflite}",
         f"--labels={tflite_settings.labels_path_for(float_tflite)}", f"--image={all_images[-1]}"],
        capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("red ")  # "label score", best first.
    scores = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert scores == sorted(scores, reverse=True)


def test_labels_without_tflite_model_is_a_user_error():
    from retrain.cli import label_image_command  # pylint: disable=import-outside-toplevel
    with pytest.raises(UserError, match=r"--labels='l.txt' goes with --tflite_model"):
        label_image_command.load_model("saved_model", None, "l.txt")


# Several forward passes at once (label_image on 2-8 cores, retrain's TFLite evaluation): each
# thread needs an interpreter of its own. One interpreter shared by two threads failed the
# first user who labelled a folder with "There is at least 1 reference to internal data in
# the interpreter", and could swap two batches' results when it did not.


def _write_slow_tflite(path, labels=("blue", "green", "red")):
    """A .tflite of four 32-filter convolutions on [batch, 32, 32, 3]: a few ms a batch, long
    enough that two passes sharing one interpreter overlap on nearly every batch (the tiny
    module's microseconds hid the bug in all but one run in five)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(0)
    kernels = [tf.constant(rng.normal(0, 0.1, (3, 3, 3 if i == 0 else 32, 32)), tf.float32)
               for i in range(4)]
    head = tf.constant(rng.normal(0, 1, (32, len(labels))), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
    def model(images):
        features = images
        for kernel in kernels:
            features = tf.nn.relu(tf.nn.conv2d(features, kernel, 1, "SAME"))
        return tf.nn.softmax(tf.reduce_mean(features, [1, 2]) @ head)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.get_concrete_function()], model)
    tflite_export.write_tflite(converter.convert(), str(path), list(labels))
    return str(path)


@pytest.fixture(scope="module")
def slow_tflite(tmp_path_factory):
    return _write_slow_tflite(tmp_path_factory.mktemp("slow") / "model.tflite")


@pytest.fixture(scope="module")
def folder_of_60(tmp_path_factory):
    """60 colour images: 15 batches of 4, so both passes get many."""
    return write_solid_colour_images(tmp_path_factory.mktemp("sixty"), per_class=20)


def _classify(classifier, image_dir, forward_streams):
    paths = label_image.find_image_files(image_dir)
    predictions = list(label_image.classify_files(classifier, paths, 4, MAX_PIXELS,
                                                  forward_streams=forward_streams))
    assert [prediction.error for prediction in predictions] == [None] * len(paths)
    return np.stack([prediction.probabilities for prediction in predictions])


@pytest.mark.timeout(120)
def test_two_passes_at_once_predict_what_one_pass_predicts(slow_tflite, folder_of_60):
    classifier = tflite_runtime.load_classifier(slow_tflite)
    one_pass = _classify(classifier, folder_of_60, forward_streams=1)
    assert one_pass.shape == (60, 3)
    for _ in range(3):  # The same classifier again: new worker threads, new interpreters.
        np.testing.assert_array_equal(_classify(classifier, folder_of_60, forward_streams=2),
                                      one_pass)


class _WatchedInterpreter:
    """A real interpreter that records the threads that call it. Its first invoke waits (at
    a barrier shared by all of them) until another thread reaches its own first invoke: it
    passes only if two forward passes really run at once."""

    def __init__(self, interpreter, barrier):
        self._interpreter, self._barrier = interpreter, barrier
        self.threads = set()

    def __getattr__(self, name):
        self.threads.add(threading.get_ident())
        return getattr(self._interpreter, name)

    def invoke(self):
        first = threading.get_ident() not in self.threads
        self.threads.add(threading.get_ident())
        if first:
            self._barrier.wait()
        self._interpreter.invoke()


@pytest.mark.timeout(120)
def test_each_thread_predicts_on_an_interpreter_of_its_own(slow_tflite, folder_of_60,
                                                           monkeypatch):
    expected = _classify(tflite_runtime.load_classifier(slow_tflite), folder_of_60, 1)
    barrier = threading.Barrier(2, timeout=30)  # Broken (an error) if no second pass comes.
    made = []
    real_make_interpreter = tflite_runtime.make_interpreter

    def make_watched_interpreter(**model):
        made.append(_WatchedInterpreter(real_make_interpreter(**model), barrier))
        return made[-1]

    monkeypatch.setattr(tflite_runtime, "make_interpreter", make_watched_interpreter)
    classifier = tflite_runtime.load_classifier(slow_tflite)
    np.testing.assert_array_equal(_classify(classifier, folder_of_60, forward_streams=2),
                                  expected)
    assert all(len(interpreter.threads) == 1 for interpreter in made), [
        len(interpreter.threads) for interpreter in made]
    # The one load_classifier read the model's details with, and one per worker thread.
    assert len(made) == 3


def _label_folder(tflite_file, image_dir, forward_passes):
    """Runs the installed `label_image --tflite_model --image_dir` with that many passes at
    once (devices.forward_streams reads RETRAIN_FORWARD_PASSES); returns CompletedProcess."""
    command = os.path.join(os.path.dirname(sys.executable), "label_image")
    environment = dict(os.environ, RETRAIN_FORWARD_PASSES=str(forward_passes))
    return subprocess.run([command, f"--tflite_model={tflite_file}", f"--image_dir={image_dir}",
                           "--batch_size=4"], capture_output=True, text=True, env=environment,
                          check=False, timeout=120)


@pytest.mark.timeout(300)
def test_label_image_command_labels_a_folder_with_two_passes_at_once(slow_tflite, folder_of_60):
    one, two = (_label_folder(slow_tflite, folder_of_60, passes) for passes in (1, 2))
    assert two.returncode == 0, two.stderr[-2000:]
    assert "reference to internal data" not in two.stderr
    assert one.returncode == 0, one.stderr[-2000:]
    assert len(two.stdout.splitlines()) == 60 * 4  # A path line and the top 3 labels, per image.
    assert two.stdout == one.stdout
