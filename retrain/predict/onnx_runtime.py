"""Running an .onnx file that retrain wrote (--onnx_output_file) with onnxruntime: the
classifier label_image uses for --onnx_model. No TensorFlow here."""

import os

import numpy as np

from retrain.errors import UserError
from retrain.export.tflite_settings import labels_path_for

INSTALL_HINT = "pip install 'retrain[onnx]'"


class OnnxClassifier:
    """An .onnx classifier with label_image.Classifier's interface: labels, image_size,
    predict, predict_with_unknown. An onnxruntime session may be run from several threads
    at once."""

    def __init__(self, model_path, labels):
        """Raises ValueError if model_path is not an ONNX model onnxruntime can load."""
        import onnxruntime  # pylint: disable=import-outside-toplevel
        try:
            self._session = onnxruntime.InferenceSession(
                model_path, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types for bad files.
            raise ValueError(str(error).strip().splitlines()[0]) from error
        self.model_path = model_path
        self.labels = labels
        self._input = self._session.get_inputs()[0]
        outputs = self._session.get_outputs()
        # onnx_export keeps the signature's names: prediction [B, C], unknown_score [B].
        self._output = next(output for output in outputs if len(output.shape) == 2)
        unknown = next((output for output in outputs if len(output.shape) == 1), None)
        self._unknown_name = unknown.name if unknown is not None else None
        self.has_unknown_score = unknown is not None
        self.image_size = tuple(int(value) for value in self._input.shape[1:3])
        self.num_outputs = int(self._output.shape[-1])
        self.unknown_threshold = None  # From the calibration sidecar (load_classifier).

    def predict(self, batch):
        """float32 [batch, H, W, 3] in [0, 1] -> float32 probabilities [batch, num_labels]."""
        return self.predict_with_unknown(batch)[0]

    def predict_with_unknown(self, batch):
        """(probabilities float32 [batch, num_labels], unknown scores float32 [batch] or None)."""
        names = [self._output.name] + ([self._unknown_name] if self._unknown_name else [])
        results = self._session.run(names, {self._input.name: np.asarray(batch, np.float32)})
        return results[0], (results[1] if self._unknown_name else None)


def check_onnx_files(onnx_file, labels_file=None):
    """The labels file of onnx_file (labels_file, or the one written beside it); raises
    UserError if either file is missing. Needs neither onnxruntime nor TensorFlow."""
    labels_file = labels_file or labels_path_for(onnx_file)
    if not os.path.isfile(onnx_file):
        raise UserError(f"--onnx_model {onnx_file!r} does not exist; pass the .onnx file that "
                        "retrain wrote with --onnx_output_file.")
    if not os.path.isfile(labels_file):
        raise UserError(f"Labels file {labels_file!r} does not exist; pass --labels with the "
                        "labels file retrain wrote beside the .onnx file.")
    return labels_file


def check_onnxruntime():
    """Raises UserError unless onnxruntime can be imported (checked before loading anything)."""
    import importlib.util  # pylint: disable=import-outside-toplevel
    if importlib.util.find_spec("onnxruntime") is None:
        raise UserError(f"--onnx_model needs onnxruntime, which is not installed; run "
                        f"`{INSTALL_HINT}` (or `pip install onnxruntime`).")


def load_classifier(onnx_file, labels_file=None):
    """Loads an .onnx classifier and its labels (default: the file beside it).

    Raises:
      UserError: a file is missing or is not what retrain wrote, or they do not match.
    """
    labels_file = check_onnx_files(onnx_file, labels_file)
    check_onnxruntime()
    with open(labels_file, "rb") as lines:
        labels = [os.fsdecode(line.rstrip(b"\r\n")) for line in lines if line.strip()]
    try:
        classifier = OnnxClassifier(onnx_file, labels)
    except (ValueError, StopIteration) as error:
        raise UserError(f"--onnx_model {onnx_file!r} is not an ONNX model retrain wrote "
                        f"({error}); pass the .onnx file from --onnx_output_file.") from error
    if classifier.num_outputs != len(labels):
        raise UserError(f"Labels file {labels_file!r} has {len(labels)} labels but "
                        f"{onnx_file!r} has {classifier.num_outputs} outputs; pass the labels "
                        "file written with that model.")
    if classifier.has_unknown_score:
        # The same sidecar as the .tflite's (<name>_calibration.json), read the same way.
        from retrain.predict import tflite_runtime  # pylint: disable=import-outside-toplevel
        classifier.unknown_threshold = tflite_runtime.read_unknown_threshold(onnx_file)
    return classifier
