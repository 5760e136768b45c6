"""Checking the TensorFlow Lite and ONNX exports: convert, write, then score each on the test
split next to the SavedModel (same images, same decoding), and warn if quantization cost
accuracy."""

import dataclasses
import os

from absl import logging
import numpy as np

from retrain.data import images
from retrain.export import onnx_export
from retrain.export import tflite_metadata
from retrain.export.tflite_export import convert
from retrain.export.tflite_export import representative_dataset
from retrain.export.tflite_export import sample_paths
from retrain.export.tflite_export import write_tflite
from retrain.export.tflite_settings import check_settings
from retrain.predict import label_image
from retrain.predict import onnx_runtime
from retrain.predict.tflite_runtime import load_classifier


# A quantized model that scores more than this many points of test accuracy below the
# SavedModel gets a warning: beyond it, the quantization is costing the user something.
ACCURACY_DROP_WARNING_POINTS = 1.0


# What to suggest instead of a mode that lost accuracy: the modes that round less.
_KEEPS_MORE_ACCURACY = {"int8": "dynamic or float16", "dynamic": "float16", "float16": "none"}


@dataclasses.dataclass
class TFLiteReport:
    """What export_and_evaluate measured; goes into metrics.json under "tflite"."""

    file: str
    labels_file: str
    quantization: str
    input_type: str  # "float32" or "uint8"
    size_bytes: int
    saved_model_size_bytes: int
    test_count: int
    test_top1_accuracy: float  # nan without test images
    saved_model_test_top1_accuracy: float  # on the same test images
    top1_agreement_with_saved_model: float  # fraction of test images with the same top-1 label
    accuracy_drop_points: float  # SavedModel minus TFLite accuracy, in percentage points
    # Whether the file carries TFLite metadata (labels, normalization) for MediaPipe Tasks and
    # the Task Library: False when the `metadata` extra (mediapipe) is not installed.
    metadata: bool = False


@dataclasses.dataclass
class ONNXReport:
    """What export_and_evaluate_onnx measured; goes into metrics.json under "onnx"."""

    file: str
    labels_file: str
    size_bytes: int
    saved_model_size_bytes: int
    test_count: int
    test_top1_accuracy: float  # nan without test images
    saved_model_test_top1_accuracy: float  # on the same test images
    top1_agreement_with_saved_model: float  # fraction of test images with the same top-1 label
    accuracy_drop_points: float  # SavedModel minus ONNX accuracy, in percentage points


def predict_files(classifier, paths, batch_size, max_pixels):
    """float32 probabilities [len(paths), num_labels]; rows of unreadable images are nan."""
    rows = np.full([len(paths), len(classifier.labels)], np.nan, np.float32)
    for index, prediction in enumerate(label_image.classify_files(classifier, paths, batch_size,
                                                                  max_pixels)):
        if prediction.probabilities is not None:
            rows[index] = prediction.probabilities
    return rows


def export_and_evaluate(settings, saved_model_dir, labels, image_size, training_paths, test_images,
                        reference_probabilities):
    """Converts, writes and evaluates the .tflite; logs and returns a TFLiteReport.

    Args:
      settings: TFLiteSettings.
      saved_model_dir: the SavedModel export.export_saved_model wrote.
      labels: class names in output order.
      image_size: (height, width) the module takes.
      training_paths: training image files; int8 calibrates on a sample of them.
      test_images: [dataset.ImageFile] of the test split (path, label_index).
      reference_probabilities: float32 [len(test_images), num_labels], the SavedModel's
        predictions for test_images.
    """
    check_settings(settings.output_file, settings.quantization, settings.int8_input)
    representative = None
    if settings.quantization == "int8":
        sample = sample_paths(training_paths, settings.representative_images, settings.seed)
        logging.info("Calibrating int8 quantization on %d training images.", len(sample))
        representative = representative_dataset(sample, image_size, settings.max_image_pixels)
    model_bytes = convert(saved_model_dir, settings.quantization, settings.int8_input,
                          representative)
    model_bytes, has_metadata = tflite_metadata.with_metadata(model_bytes, labels)
    labels_file = write_tflite(model_bytes, settings.output_file, labels)
    classifier = load_classifier(settings.output_file, labels_file)
    probabilities = predict_files(classifier, [image.path for image in test_images],
                                  settings.batch_size, settings.max_image_pixels)
    truth = np.array([image.label_index for image in test_images], np.int64)
    scores = compare_predictions(probabilities, reference_probabilities, truth)
    report = TFLiteReport(
        file=settings.output_file, labels_file=labels_file, quantization=settings.quantization,
        input_type=classifier.input_type, size_bytes=len(model_bytes),
        saved_model_size_bytes=directory_size(saved_model_dir), test_count=len(truth),
        metadata=has_metadata, **scores)
    log_report(report)
    return report


def export_and_evaluate_onnx(output_file, saved_model_dir, labels, test_images,
                             reference_probabilities, batch_size=32,
                             max_pixels=images.DEFAULT_MAX_PIXELS):
    """Converts, writes and evaluates the .onnx (with onnxruntime); logs and returns an
    ONNXReport. Arguments as export_and_evaluate's."""
    model_bytes = onnx_export.convert(saved_model_dir)
    labels_file = onnx_export.write_onnx(model_bytes, output_file, labels)
    classifier = onnx_runtime.load_classifier(output_file, labels_file)
    probabilities = predict_files(classifier, [image.path for image in test_images], batch_size,
                                  max_pixels)
    truth = np.array([image.label_index for image in test_images], np.int64)
    scores = compare_predictions(probabilities, reference_probabilities, truth)
    report = ONNXReport(file=output_file, labels_file=labels_file, size_bytes=len(model_bytes),
                        saved_model_size_bytes=directory_size(saved_model_dir),
                        test_count=len(truth), **scores)
    logging.info("ONNX: %.2f MB vs SavedModel %.2f MB; test accuracy %.1f%% vs %.1f%% (N=%d), "
                 "same top-1 as the SavedModel on %.1f%%.", report.size_bytes / 1e6,
                 report.saved_model_size_bytes / 1e6, report.test_top1_accuracy * 100,
                 report.saved_model_test_top1_accuracy * 100, report.test_count,
                 report.top1_agreement_with_saved_model * 100)
    return report


def compare_predictions(probabilities, reference_probabilities, truth):
    """Top-1 accuracy of both models and how often they agree, on the same images.

    Args:
      probabilities: float32 [N, C] from the TFLite model (a nan row: the image failed and
        counts as wrong).
      reference_probabilities: float32 [N, C] from the SavedModel.
      truth: int [N] label indices.

    Returns:
      dict of TFLiteReport's accuracy fields; nan when N is 0.
    """
    if len(truth) == 0:
        nan = float("nan")
        return dict(test_top1_accuracy=nan, saved_model_test_top1_accuracy=nan,
                    top1_agreement_with_saved_model=nan, accuracy_drop_points=nan)
    failed = np.isnan(probabilities).any(axis=1)
    predicted = np.where(failed, -1, np.argmax(np.nan_to_num(probabilities, nan=0.0), axis=1))
    reference = np.argmax(reference_probabilities, axis=1)
    accuracy = float(np.mean(predicted == truth))
    reference_accuracy = float(np.mean(reference == truth))
    return dict(test_top1_accuracy=accuracy, saved_model_test_top1_accuracy=reference_accuracy,
                top1_agreement_with_saved_model=float(np.mean(predicted == reference)),
                accuracy_drop_points=round((reference_accuracy - accuracy) * 100, 4))


def log_report(report):
    """Logs size and accuracy next to the SavedModel's; warns if quantization costs accuracy."""
    logging.info("TensorFlow Lite (%s, %s input): %.2f MB vs SavedModel %.2f MB; test accuracy "
                 "%.1f%% vs %.1f%% (N=%d), same top-1 as the SavedModel on %.1f%%.",
                 report.quantization, report.input_type, report.size_bytes / 1e6,
                 report.saved_model_size_bytes / 1e6, report.test_top1_accuracy * 100,
                 report.saved_model_test_top1_accuracy * 100, report.test_count,
                 report.top1_agreement_with_saved_model * 100)
    if report.quantization != "none" and report.accuracy_drop_points > ACCURACY_DROP_WARNING_POINTS:
        logging.warning("The %s-quantized TensorFlow Lite model scores %.1f points below the "
                        "SavedModel on the test split (%.1f%% vs %.1f%%, N=%d); if that matters, "
                        "try --tflite_quantization=%s, which keeps more accuracy.",
                        report.quantization, report.accuracy_drop_points,
                        report.test_top1_accuracy * 100,
                        report.saved_model_test_top1_accuracy * 100, report.test_count,
                        _KEEPS_MORE_ACCURACY[report.quantization])


def directory_size(directory):
    """Bytes in all files under directory."""
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(directory) for name in names)
