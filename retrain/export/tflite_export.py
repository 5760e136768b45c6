"""TensorFlow Lite export: convert the exported SavedModel, quantized or not, and evaluate it.

The .tflite file holds the SavedModel's serving_default signature: images float32
[batch, H, W, 3] in [0, 1] (or, for int8 with uint8 input, the raw 0..255 pixel values)
in, class probabilities [batch, num_labels] out. Its labels are written beside it, one per
line, in output order. Quantization modes, after TFLite Model Maker's QuantizationConfig:

  none     float32 weights and activations.
  dynamic  int8 weights, float activations (dynamic-range quantization); about 4x smaller.
  float16  float16 weights; about 2x smaller, runs in float16 on GPUs that have it.
  int8     full-integer weights and activations, calibrated on training images; about 4x
           smaller and what integer-only accelerators need.

The interpreter comes from the ai_edge_litert package when it is installed, else from
tf.lite, which TensorFlow 2.21 still ships but has deprecated in favour of ai_edge_litert.
"""

import dataclasses
import os
import threading
import warnings

from absl import logging
import numpy as np
import tensorflow as tf

from retrain.data import images
from retrain.data import preprocess
from retrain.errors import UserError
from retrain.export import saved_model
from retrain.predict import label_image
from retrain.runtime import files

# The settings are checked before TensorFlow is imported (retrain.preflight); the names stay here too.
from retrain.preflight import INT8_INPUT_TYPES  # pylint: disable=unused-import
from retrain.preflight import QUANTIZATION_MODES  # pylint: disable=unused-import
from retrain.preflight import check_tflite_modes as check_modes
from retrain.preflight import check_tflite_settings as check_settings

# A quantized model that scores more than this many points of test accuracy below the
# SavedModel gets a warning: beyond it, the quantization is costing the user something.
ACCURACY_DROP_WARNING_POINTS = 1.0

# What to suggest instead of a mode that lost accuracy: the modes that round less.
_KEEPS_MORE_ACCURACY = {"int8": "dynamic or float16", "dynamic": "float16", "float16": "none"}


@dataclasses.dataclass
class TFLiteSettings:
    output_file: str
    quantization: str = "none"  # one of QUANTIZATION_MODES
    int8_input: str = "float32"  # one of INT8_INPUT_TYPES; used by int8 only
    representative_images: int = 100  # training images that calibrate int8
    seed: int = 0  # picks the representative images
    max_image_pixels: int = images.DEFAULT_MAX_PIXELS
    batch_size: int = 32  # images per interpreter call in evaluation


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


def labels_path_for(tflite_file):
    """The labels file written beside a .tflite file: model.tflite -> model_labels.txt."""
    return os.path.splitext(tflite_file)[0] + "_labels.txt"


def sample_paths(paths, count, seed):
    """Up to `count` of paths, a seeded random sample in their original order."""
    if len(paths) <= count:
        return list(paths)
    chosen = np.random.default_rng(seed).choice(len(paths), count, replace=False)
    return [paths[index] for index in sorted(chosen)]


def representative_dataset(paths, image_size, max_pixels):
    """A callable for TFLiteConverter that yields training images one at a time.

    Images are decoded and resized exactly as for training (preprocess.pixel_batches), so
    the calibrated ranges are the ones the model sees. Unreadable files are left out.

    Yields:
      [float32 [1, H, W, 3] in [0, 1]].
    """
    def generate():
        pinned = False
        for batch in preprocess.pixel_batches(paths, image_size, 1, max_pixels):
            if not batch.ok[0]:
                continue
            image = preprocess.as_unit_float(batch.pixels).numpy()
            if not pinned:
                # One black and one white pixel pin the input's calibrated range to exactly
                # [0, 1], so a uint8 input is the plain 0..255 pixel value a camera gives.
                image[0, 0, 0, :] = 0.0
                image[0, 0, 1, :] = 1.0
                pinned = True
            yield [image]
    return generate


def convert(saved_model_dir, quantization, int8_input="float32", representative=None):
    """Converts the SavedModel's serving_default signature to a TFLite flatbuffer.

    Args:
      saved_model_dir: a SavedModel that export.export_saved_model wrote.
      quantization: one of QUANTIZATION_MODES.
      int8_input: for int8, "float32" (float input and output, quantized inside) or "uint8"
        (uint8 input and output: a fully integer model, as Model Maker's int8 config).
      representative: for int8, a callable yielding [float32 [1, H, W, 3]] (see
        representative_dataset).

    Returns:
      bytes, the .tflite file.

    Raises:
      UserError: the module holds operations TensorFlow Lite cannot express in that mode.
    """
    check_modes(quantization, int8_input)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=["serving_default"])
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if representative is None:
            raise ValueError("int8 quantization needs a representative dataset.")
        converter.representative_dataset = representative
        # Integer kernels only: a model that would silently fall back to float ops is
        # not what an integer-only accelerator can run, so conversion fails instead.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_input == "uint8":
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
    try:
        return converter.convert()
    except Exception as error:  # The converter raises ConverterError and others, by stage.
        first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise UserError(f"Cannot convert {saved_model_dir!r} to TensorFlow Lite with "
                        f"--tflite_quantization={quantization} ({first_line}); try another "
                        "quantization mode or module.") from error


def write_tflite(model_bytes, output_file, labels):
    """Writes the .tflite and the labels file beside it, atomically; returns the labels path."""
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    files.write_file_atomically(output_file, model_bytes)
    labels_file = labels_path_for(output_file)
    saved_model.write_labels(labels, labels_file)
    logging.info("Saved the TensorFlow Lite model to %s (%d bytes)", output_file, len(model_bytes))
    return labels_file


def make_interpreter(model_path=None, model_content=None):
    """A TFLite interpreter: ai_edge_litert's if installed, else the deprecated tf.lite one."""
    try:
        # pylint: disable-next=import-outside-toplevel
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter  # pylint: disable=invalid-name
    with warnings.catch_warnings():
        # tf.lite.Interpreter warns on every construction that ai_edge_litert replaces it;
        # the module docstring says so once, and the log should not repeat it per model.
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        return Interpreter(model_path=model_path, model_content=model_content)


class TFLiteClassifier:
    """A .tflite classifier with label_image.Classifier's interface: labels, image_size, predict.

    An interpreter holds its input and output tensors in place, so it cannot run two batches
    at once: tf.lite refuses a call made while another thread is inside one ("There is at
    least 1 reference to internal data in the interpreter"), and a batch set between another
    thread's set_tensor and invoke would swap their results. label_image and the export's
    evaluation run several forward passes at once (batch_tuning.forward_batches), so each
    thread predicts on an interpreter of its own, built from the same file the first time that
    thread predicts (mapped, not copied: the weights are in memory once).
    """

    def __init__(self, model_path, labels):
        """Raises ValueError if model_path is not a TensorFlow Lite model."""
        self.model_path = model_path
        self.labels = labels
        self._per_thread = threading.local()
        interpreter = self._interpreter()
        self._input = interpreter.get_input_details()[0]
        self._output = interpreter.get_output_details()[0]
        self.image_size = tuple(int(value) for value in self._input["shape"][1:3])
        self.input_type = np.dtype(self._input["dtype"]).name
        self.num_outputs = int(self._output["shape"][-1])

    def _interpreter(self):
        """This thread's interpreter, allocated for its last batch size; built on first use."""
        state = self._per_thread
        if not hasattr(state, "interpreter"):
            state.interpreter = make_interpreter(model_path=self.model_path)
            state.interpreter.allocate_tensors()
            state.batch_size = int(state.interpreter.get_input_details()[0]["shape"][0])
        return state.interpreter

    def predict(self, batch):
        """float32 [batch, H, W, 3] in [0, 1] -> float32 probabilities [batch, num_labels].

        Safe to call from several threads at once: each runs its own interpreter.
        """
        batch = np.asarray(batch, np.float32)
        interpreter = self._interpreter()
        if len(batch) != self._per_thread.batch_size:
            interpreter.resize_tensor_input(self._input["index"], [len(batch), *batch.shape[1:]])
            interpreter.allocate_tensors()
            self._per_thread.batch_size = len(batch)
        interpreter.set_tensor(self._input["index"], _quantize(batch, self._input))
        interpreter.invoke()
        # get_tensor returns a copy; tensor() would return a view of the interpreter's memory,
        # which its next call overwrites (and which tf.lite counts as a reference that blocks it).
        return _dequantize(interpreter.get_tensor(self._output["index"]), self._output)


def _quantize(values, detail):
    """Float values -> the tensor's type, with its scale and zero point if it is an integer."""
    if detail["dtype"] == np.float32:
        return values
    scale, zero_point = detail["quantization"]
    limits = np.iinfo(detail["dtype"])
    quantized = np.clip(np.round(values / scale + zero_point), limits.min, limits.max)
    return quantized.astype(detail["dtype"])


def _dequantize(values, detail):
    if detail["dtype"] == np.float32:
        return values
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def load_classifier(tflite_file, labels_file=None):
    """Loads a .tflite classifier and its labels (default: the file beside it).

    Raises:
      UserError: a file is missing or is not what retrain wrote, or they do not match.
    """
    labels_file = labels_file or labels_path_for(tflite_file)
    if not os.path.isfile(tflite_file):
        raise UserError(f"--tflite_model {tflite_file!r} does not exist; pass the .tflite file "
                        "that retrain wrote with --tflite_output_file.")
    if not os.path.isfile(labels_file):
        raise UserError(f"Labels file {labels_file!r} does not exist; pass --labels with the "
                        "labels file retrain wrote beside the .tflite file.")
    with open(labels_file, "rb") as lines:
        labels = [os.fsdecode(line.rstrip(b"\r\n")) for line in lines if line.strip()]
    try:
        classifier = TFLiteClassifier(tflite_file, labels)
    except ValueError as error:
        raise UserError(f"--tflite_model {tflite_file!r} is not a TensorFlow Lite model ({error}); "
                        "pass the .tflite file that retrain wrote.") from error
    if classifier.num_outputs != len(labels):
        raise UserError(f"Labels file {labels_file!r} has {len(labels)} labels but "
                        f"{tflite_file!r} has {classifier.num_outputs} outputs; pass the labels "
                        "file written with that model.")
    return classifier


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
    labels_file = write_tflite(model_bytes, settings.output_file, labels)
    classifier = load_classifier(settings.output_file, labels_file)
    probabilities = predict_files(classifier, [image.path for image in test_images],
                                  settings.batch_size, settings.max_image_pixels)
    truth = np.array([image.label_index for image in test_images], np.int64)
    scores = compare_predictions(probabilities, reference_probabilities, truth)
    report = TFLiteReport(
        file=settings.output_file, labels_file=labels_file, quantization=settings.quantization,
        input_type=classifier.input_type, size_bytes=len(model_bytes),
        saved_model_size_bytes=directory_size(saved_model_dir), test_count=len(truth), **scores)
    log_report(report)
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
