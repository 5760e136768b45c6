"""TensorFlow Lite export: convert the exported SavedModel, quantized or not, and write it.

The .tflite file holds the SavedModel's serving_default signature: images float32
[batch, H, W, 3] in [0, 1] (or, for int8 with uint8 input, the raw 0..255 pixel values)
in, class probabilities [batch, num_labels] out. Its labels are written beside it, one per
line, in output order. Quantization modes, after TFLite Model Maker's QuantizationConfig:

  none     float32 weights and activations.
  dynamic  int8 weights, float activations (dynamic-range quantization); about 4x smaller.
  float16  float16 weights; about 2x smaller, runs in float16 on GPUs that have it.
  int8     full-integer weights and activations, calibrated on training images; about 4x
           smaller and what integer-only accelerators need.

predict/tflite_runtime.py runs the file; evaluation/export_check.py scores it on the test split
against the SavedModel.
"""

import dataclasses
import os

from absl import logging
import numpy as np
import tensorflow as tf

from retrain.data import images
from retrain.data import preprocess
from retrain.errors import UserError
from retrain.export import layout
from retrain.export import saved_model
from retrain.runtime import files

from retrain.export.tflite_settings import check_modes
from retrain.export.tflite_settings import labels_path_for


@dataclasses.dataclass
class TFLiteSettings:
    output_file: str
    quantization: str = "none"  # one of tflite_settings.QUANTIZATION_MODES
    int8_input: str = "float32"  # one of tflite_settings.INT8_INPUT_TYPES; int8 only
    representative_images: int = 100  # training images that calibrate int8
    seed: int = 0  # picks the representative images
    max_image_pixels: int = images.DEFAULT_MAX_PIXELS
    batch_size: int = 32  # images per interpreter call in evaluation


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
      saved_model_dir: a SavedModel that export.export_saved_model wrote (its folder or the
        version folder in it).
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
    saved_model_dir = layout.find_saved_model(saved_model_dir) or saved_model_dir
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[converted_signature(saved_model_dir)])
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


def converted_signature(saved_model_dir):
    """The signature converters take: serving_numeric (no string outputs) where the export has
    it, else serving_default (format-1 exports)."""
    # pylint: disable-next=import-outside-toplevel
    from tensorflow.core.protobuf import saved_model_pb2
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as model_file:
        proto.ParseFromString(model_file.read())
    keys = {key for graph in proto.meta_graphs for key in graph.signature_def}
    return "serving_numeric" if "serving_numeric" in keys else "serving_default"


def write_tflite(model_bytes, output_file, labels):
    """Writes the .tflite and the labels file beside it, atomically; returns the labels path."""
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    files.write_file_atomically(output_file, model_bytes)
    labels_file = labels_path_for(output_file)
    saved_model.write_labels(labels, labels_file)
    logging.info("Saved the TensorFlow Lite model to %s (%d bytes)", output_file, len(model_bytes))
    return labels_file


