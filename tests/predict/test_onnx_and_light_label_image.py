"""ONNX export and label_image without TensorFlow: the .onnx agrees with the SavedModel in
onnxruntime, and label_image --tflite_model / --onnx_model print what the SavedModel path
prints, in a process where TensorFlow cannot be imported."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from retrain.data import images
from retrain.data import preprocess
from retrain.errors import UserError
from retrain.evaluation import export_check
from retrain.export import onnx_export
from retrain.export import tflite_export
from retrain.predict import onnx_runtime
from tests.conftest import tiny_classifier

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("tf2onnx", reason="the onnx extra is not installed")

# Runs label_image's main in a process where `import tensorflow` fails (None in sys.modules
# makes every import of it raise ImportError), then checks that nothing imported it.
_WITHOUT_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None
sys.argv = ["label_image"] + sys.argv[1:]
from retrain.cli import label_image_command
try:
    label_image_command.run_main()
finally:
    assert sys.modules["tensorflow"] is None, "tensorflow was imported"
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_module, colour_images):
    """(folder, saved_model_dir, labels, paths, SavedModel probabilities) with model.onnx
    and model.tflite (float) and their labels files in folder."""
    folder = tmp_path_factory.mktemp("onnx")
    saved_model_dir = folder / "saved_model"
    classifier = tiny_classifier(tiny_module, saved_model_dir)
    paths = sorted(glob.glob(os.path.join(colour_images, "*", "*")))[::4]
    reference = export_check.predict_files(classifier, paths, 32, 10 ** 8)
    onnx_export.write_onnx(onnx_export.convert(str(saved_model_dir)), str(folder / "model.onnx"),
                           classifier.labels)
    tflite_export.write_tflite(tflite_export.convert(str(saved_model_dir), "none"),
                               str(folder / "model.tflite"), classifier.labels)
    return folder, str(saved_model_dir), classifier.labels, paths, reference


def test_onnx_agrees_with_the_saved_model(exported):
    folder, _, labels, paths, reference = exported
    classifier = onnx_runtime.load_classifier(str(folder / "model.onnx"))
    assert classifier.labels == labels and classifier.image_size == (32, 32)
    assert (folder / "model_labels.txt").read_text() == "blue\ngreen\nred\n"
    probabilities = export_check.predict_files(classifier, paths, 4, 10 ** 8)
    np.testing.assert_allclose(probabilities, reference, atol=1e-5)


def test_onnx_report_scores_the_test_split(exported, tmp_path):
    folder, saved_model_dir, labels, paths, reference = exported
    test_images = [type("ImageFile", (), {"path": path, "label_index": int(np.argmax(row))})
                   for path, row in zip(paths, reference)]
    report = export_check.export_and_evaluate_onnx(str(tmp_path / "m.onnx"), saved_model_dir,
                                                   labels, test_images, reference)
    assert report.size_bytes == os.path.getsize(tmp_path / "m.onnx")
    assert report.test_count == len(paths)
    assert report.top1_agreement_with_saved_model == 1.0 == report.test_top1_accuracy


def test_the_tensorflow_free_reader_gives_trainings_numbers(exported):
    paths = exported[3]
    for path in paths:
        pixels = images.read_for_module(path, (32, 32), 10 ** 8)
        np.testing.assert_array_equal(images.as_unit_float(pixels),
                                      preprocess.as_unit_float(pixels).numpy())


def _label_image_without_tensorflow(args):
    completed = subprocess.run([sys.executable, "-c", _WITHOUT_TENSORFLOW, *args],
                               capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    # LiteRT's "Created TensorFlow Lite XNNPACK delegate" notice is kept off stderr.
    assert "XNNPACK" not in completed.stderr, completed.stderr
    return completed.stdout


@pytest.mark.timeout(120)
@pytest.mark.parametrize("output_format", ["text", "json"])
def test_tflite_and_onnx_print_what_the_saved_model_prints_without_tensorflow(
        exported, output_format, capsys):
    from retrain.cli import label_image_command  # pylint: disable=import-outside-toplevel
    folder, saved_model_dir, _, paths, _ = exported
    # The SavedModel's lines, in this process (TensorFlow is loaded here already).
    label_image_command.label_files(paths, saved_model_dir, output_format, 2, None)
    expected = capsys.readouterr().out
    common = [f"--output_format={output_format}", "--num_top_predictions=2", *paths]
    for model in (f"--tflite_model={folder / 'model.tflite'}",
                  f"--onnx_model={folder / 'model.onnx'}"):
        printed = _label_image_without_tensorflow([model, *common])
        assert len(printed.splitlines()) == len(expected.splitlines()) >= len(paths)
        if output_format == "json":
            for line, expected_line in zip(printed.splitlines(), expected.splitlines()):
                record, expected_record = json.loads(line), json.loads(expected_line)
                assert record["labels"] == expected_record["labels"]
                np.testing.assert_allclose(record["scores"], expected_record["scores"], atol=1e-5)
        else:
            assert [line.split(" ")[0] for line in printed.splitlines()] == [
                line.split(" ")[0] for line in expected.splitlines()]


def test_onnx_model_errors_are_user_errors(exported, tmp_path):
    folder = exported[0]
    with pytest.raises(UserError, match=r"--onnx_model '.*nothing.onnx' does not exist"):
        onnx_runtime.load_classifier(str(tmp_path / "nothing.onnx"))
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not an onnx model" * 10)
    (tmp_path / "bogus_labels.txt").write_text("a\nb\n")
    with pytest.raises(UserError, match=r"is not an ONNX model retrain wrote"):
        onnx_runtime.load_classifier(str(bogus))
    (tmp_path / "two.txt").write_text("a\nb\n")
    with pytest.raises(UserError, match=r"has 2 labels but .* has 3 outputs"):
        onnx_runtime.load_classifier(str(folder / "model.onnx"), str(tmp_path / "two.txt"))


def test_onnx_flag_without_the_extra_fails_before_tensorflow(monkeypatch):
    from retrain import preflight  # pylint: disable=import-outside-toplevel
    real_find_spec = preflight.importlib.util.find_spec
    monkeypatch.setattr(preflight.importlib.util, "find_spec",
                        lambda name: None if name == "tf2onnx" else real_find_spec(name))
    with pytest.raises(UserError, match=r"needs tf2onnx, .*pip install 'retrain\[onnx\]'"):
        preflight.check_onnx_extra("m.onnx")
    preflight.check_onnx_extra(None)


def test_the_api_loads_the_onnx_file_like_the_saved_model(exported):
    """retrain.load("model.onnx") labels as retrain.load(saved_model) does."""
    import retrain  # pylint: disable=import-outside-toplevel
    folder, saved_model_dir, labels, paths, _ = exported
    onnx_model = retrain.load(folder / "model.onnx")
    saved_model = retrain.load(saved_model_dir)
    assert onnx_model.labels == labels
    np.testing.assert_allclose(onnx_model.predict(paths), saved_model.predict(paths), atol=1e-5)
    with pytest.raises(UserError, match="labels_file goes with a .tflite or .onnx"):
        retrain.load(saved_model_dir, labels_file=str(folder / "model_labels.txt"))
