"""TFLite metadata: every quantization mode loads in MediaPipe Tasks' ImageClassifier (from
PyPI's `mediapipe`, the `metadata` extra) and names the same top-1 class as the SavedModel."""

import glob
import io
import os
import zipfile

import numpy as np
import pytest

from retrain.evaluation import export_check
from retrain.export import tflite_export
from retrain.export import tflite_metadata
from tests.conftest import tiny_classifier

MODES = [("none", "float32"), ("dynamic", "float32"), ("float16", "float32"),
         ("int8", "float32"), ("int8", "uint8")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_module, colour_images):
    """(saved_model_dir, labels, every third colour image, the SavedModel's probabilities)."""
    saved_model_dir = tmp_path_factory.mktemp("metadata") / "saved_model"
    classifier = tiny_classifier(tiny_module, saved_model_dir)
    paths = sorted(glob.glob(os.path.join(colour_images, "*", "*")))[::3]
    reference = export_check.predict_files(classifier, paths, 32, 10 ** 8)
    return str(saved_model_dir), classifier.labels, paths, reference


def _convert_with_metadata(exported, quantization, int8_input):
    saved_model_dir, labels, paths, _ = exported
    representative = tflite_export.representative_dataset(paths, (32, 32), 10 ** 8)
    model_bytes = tflite_export.convert(saved_model_dir, quantization, int8_input, representative)
    return tflite_metadata.with_metadata(model_bytes, labels)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("quantization, int8_input", MODES)
def test_mediapipe_image_classifier_names_the_saved_models_top1(
        exported, tmp_path, quantization, int8_input):
    if not tflite_metadata.available():
        pytest.skip(f"mediapipe is not installed ({tflite_metadata.INSTALL_HINT})")
    vision = pytest.importorskip("mediapipe.tasks.python.vision")
    import mediapipe  # pylint: disable=import-outside-toplevel
    from mediapipe.tasks.python import BaseOptions  # pylint: disable=import-outside-toplevel
    _, labels, paths, reference = exported
    model_bytes, has_metadata = _convert_with_metadata(exported, quantization, int8_input)
    assert has_metadata
    path = tmp_path / "model.tflite"
    path.write_bytes(model_bytes)
    # The labels travel inside the file (a zip of associated files after the flatbuffer).
    with zipfile.ZipFile(io.BytesIO(model_bytes)) as packed:
        assert packed.read("labels.txt").decode().split() == labels
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(path)), max_results=len(labels))
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image_path, expected in zip(paths, reference):
            result = classifier.classify(mediapipe.Image.create_from_file(image_path))
            categories = result.classifications[0].categories
            assert sorted(category.category_name for category in categories) == sorted(labels)
            assert categories[0].category_name == labels[int(np.argmax(expected))], image_path
            # MediaPipe decodes and resizes on its own, so scores agree loosely.
            assert categories[0].score == pytest.approx(float(np.max(expected)), abs=0.1)


def test_without_mediapipe_the_model_is_written_unchanged_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(tflite_metadata, "_writer_module", lambda: None)
    caplog.set_level("WARNING", logger="absl")
    assert tflite_metadata.with_metadata(b"model", ["a", "b"]) == (b"model", False)
    assert any("pip install 'retrain[metadata]'" in record.getMessage()
               for record in caplog.records)
