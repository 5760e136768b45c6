"""ONNX export: the exported SavedModel's float signature as an .onnx file, for onnxruntime
and the runtimes that read ONNX (what Ultralytics and timm users deploy with).

The converted signature is serving_numeric where the SavedModel has it (inputs and outputs
without strings: image float32 [batch, H, W, 3] in [0, 1] -> prediction float32 [batch, C]
and unknown_score float32 [batch]), else serving_default (format-1 exports: prediction only).
The ONNX graph keeps those names. Labels are written beside it as <name>_labels.txt, as for
TFLite. predict/onnx_runtime.py runs it; evaluation/export_check.py scores it on the test
split against the SavedModel.

tf2onnx and onnxruntime are the optional `onnx` extra; preflight.check_onnx_extra names it
before TensorFlow is imported.
"""

import os

from absl import logging
import tensorflow as tf

from retrain.errors import UserError
from retrain.export import layout
from retrain.export import saved_model
from retrain.export.tflite_settings import labels_path_for
from retrain.runtime import files

# ONNX operator set: 17 is the newest tf2onnx 1.17 emits for every op this model uses, and
# onnxruntime has run it since 1.13.
OPSET = 17


def float_signature(loaded):
    """The signature to convert: serving_numeric if the SavedModel has it, else
    serving_default (the rule TFLite's conversion follows too)."""
    signatures = loaded.signatures
    return signatures["serving_numeric" if "serving_numeric" in signatures else "serving_default"]


def convert(saved_model_dir):
    """The SavedModel's float signature as ONNX model bytes.

    Args:
      saved_model_dir: a SavedModel export.export_saved_model wrote (its folder or the
        version folder in it).

    Raises:
      UserError: the module holds operations tf2onnx cannot convert.
    """
    import tf2onnx  # pylint: disable=import-outside-toplevel
    loaded = tf.saved_model.load(layout.find_saved_model(saved_model_dir) or saved_model_dir)
    signature = float_signature(loaded)
    height, width = (int(value) for value in loaded.image_size.numpy())
    spec = tf.TensorSpec([None, height, width, 3], tf.float32, name="image")

    @tf.function(input_signature=[spec])
    def classify(image):
        return signature(image=image)

    try:
        model, _ = tf2onnx.convert.from_function(classify, input_signature=[spec], opset=OPSET)
    except Exception as error:  # tf2onnx raises several types, by stage.
        first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise UserError(f"Cannot convert {saved_model_dir!r} to ONNX ({first_line}); drop "
                        "--onnx_output_file, or try another module.") from error
    return model.SerializeToString()


def write_onnx(model_bytes, output_file, labels):
    """Writes the .onnx and the labels file beside it, atomically; returns the labels path."""
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    files.write_file_atomically(output_file, model_bytes)
    labels_file = labels_path_for(output_file)
    saved_model.write_labels(labels, labels_file)
    logging.info("Saved the ONNX model to %s (%d bytes)", output_file, len(model_bytes))
    return labels_file
