"""The TensorFlow Lite export's settings and their checks, without TensorFlow: the command
line checks them before the slow imports (retrain.preflight)."""

import os

from retrain.errors import UserError

QUANTIZATION_MODES = ("none", "dynamic", "float16", "int8")
INT8_INPUT_TYPES = ("float32", "uint8")


def check_settings(output_file, quantization, int8_input):
    """Raises UserError for a TFLite setting that cannot work, before any long work."""
    check_modes(quantization, int8_input)
    if not output_file and quantization != "none":
        raise UserError(f"--tflite_quantization={quantization} needs a file to write; pass "
                        "--tflite_output_file model.tflite.")
    if not output_file and int8_input != "float32":
        raise UserError("--tflite_int8_input needs --tflite_output_file and "
                        "--tflite_quantization=int8.")


def check_modes(quantization, int8_input):
    """Raises UserError unless quantization and int8_input are known values."""
    if quantization not in QUANTIZATION_MODES:
        raise UserError(f"--tflite_quantization={quantization!r} is not a mode; pass one of "
                        f"{', '.join(QUANTIZATION_MODES)}.")
    if int8_input not in INT8_INPUT_TYPES:
        raise UserError(f"--tflite_int8_input={int8_input!r} is not a type; pass float32 or uint8.")


def labels_path_for(tflite_file):
    """The labels file written beside a .tflite file: model.tflite -> model_labels.txt."""
    return os.path.splitext(tflite_file)[0] + "_labels.txt"


def calibration_path_for(model_file):
    """The calibration sidecar written beside a .tflite/.onnx file (its unknown threshold and
    temperature): model.tflite -> model_calibration.json."""
    return os.path.splitext(model_file)[0] + "_calibration.json"
