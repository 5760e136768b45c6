"""Running a .tflite file that retrain wrote: the classifier label_image uses for --tflite_model.

The interpreter comes from the ai_edge_litert package when it is installed, else from
tf.lite, which TensorFlow 2.21 still ships but has deprecated in favour of ai_edge_litert.
Nothing here imports TensorFlow unless ai_edge_litert is missing.
"""

import contextlib
import json
import os
import re
import threading
import warnings

import numpy as np

from retrain.errors import UserError
from retrain.export.tflite_settings import calibration_path_for
from retrain.predict import model_files
from retrain.runtime import native_stderr


def make_interpreter(model_path=None, model_content=None):
    """A TFLite interpreter: ai_edge_litert's if installed, else the deprecated tf.lite one."""
    try:
        # pylint: disable-next=import-outside-toplevel
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        # Only here: with ai_edge_litert installed, label_image --tflite_model runs without
        # TensorFlow (predict/predictions.py), and importing it would cost seconds.
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        Interpreter = tf.lite.Interpreter  # pylint: disable=invalid-name
    with warnings.catch_warnings():
        # tf.lite.Interpreter warns on every construction that ai_edge_litert replaces it;
        # the module docstring says so once, and the log should not repeat it per model.
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        return Interpreter(model_path=model_path, model_content=model_content)


# LiteRT's C++ runtime prints this on stderr the first time a process allocates an interpreter.
_DELEGATE_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
_notice_lock = threading.Lock()
_notice_seen = False


@contextlib.contextmanager
def _without_delegate_notice():
    """Drops the runtime's one-time XNNPACK notice from stderr (label_image's stderr is for
    messages a user acts on, and in a shell loop the notice came once per image): the first
    interpreter allocates with stderr filtered (C++ code writes to file descriptor 2, which
    Python's logging does not reach)."""
    global _notice_seen  # pylint: disable=global-statement
    with _notice_lock:
        if _notice_seen:
            yield
            return
        _notice_seen = True
        # Not live: a filter process would add 40-60 ms to a 0.3 s cold start.
        with native_stderr.filtered("^" + re.escape(_DELEGATE_NOTICE), live=False):
            yield


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
        outputs = interpreter.get_output_details()
        # serving_numeric converts to two outputs, in no fixed order: the probabilities
        # [B, C] and the unknown score [B]; a format-1 model has only the first.
        self._output = next(detail for detail in outputs if len(detail["shape"]) == 2)
        self._unknown = next((detail for detail in outputs if len(detail["shape"]) == 1), None)
        # From the calibration sidecar (load_classifier); None: no unknown score to judge.
        self.unknown_threshold = None
        self.image_size = tuple(int(value) for value in self._input["shape"][1:3])
        self.input_type = np.dtype(self._input["dtype"]).name
        self.num_outputs = int(self._output["shape"][-1])
        self.has_unknown_score = self._unknown is not None

    def _interpreter(self):
        """This thread's interpreter, allocated for its last batch size; built on first use."""
        state = self._per_thread
        if not hasattr(state, "interpreter"):
            state.interpreter = make_interpreter(model_path=self.model_path)
            with _without_delegate_notice():
                state.interpreter.allocate_tensors()
            state.batch_size = int(state.interpreter.get_input_details()[0]["shape"][0])
        return state.interpreter

    def predict(self, batch):
        """float32 [batch, H, W, 3] in [0, 1] -> float32 probabilities [batch, num_labels].

        Safe to call from several threads at once: each runs its own interpreter.
        """
        return self.predict_with_unknown(batch)[0]

    def predict_with_unknown(self, batch):
        """(probabilities float32 [batch, num_labels], unknown scores float32 [batch], or None
        for a model converted without them). Thread-safe as predict."""
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
        probabilities = _dequantize(interpreter.get_tensor(self._output["index"]), self._output)
        if self._unknown is None:
            return probabilities, None
        return probabilities, _dequantize(interpreter.get_tensor(self._unknown["index"]),
                                          self._unknown)


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
    labels_file = model_files.check_tflite_files(tflite_file, labels_file)
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
    if classifier.has_unknown_score:
        classifier.unknown_threshold = read_unknown_threshold(tflite_file)
    return classifier


def read_unknown_threshold(model_file):
    """The unknown threshold in the calibration sidecar beside model_file
    (<name>_calibration.json); inf (never unknown) if it has none, None without the file."""
    path = calibration_path_for(model_file)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as sidecar:
            threshold = json.load(sidecar).get("unknown_threshold")
    except (OSError, ValueError, AttributeError) as error:
        raise UserError(f"Calibration file {path!r} is not the JSON retrain wrote ({error}); "
                        "delete it, or write it again with retrain --tflite_output_file.") from error
    return float("inf") if threshold is None else float(threshold)
