"""TFLite metadata: what MediaPipe Tasks' ImageClassifier, Android's TFLite Task Library and
Coral read from a .tflite to run it without hand edits.

Written into the flatbuffer by MediaPipe's own writer
(mediapipe.tasks.python.metadata.metadata_writers), the successor of
tflite-support's metadata_writers (whose last release, 0.4.4, pins protobuf below 4, which
TensorFlow 2.21 cannot run with). It records:

  - the input image's properties (RGB, [batch, H, W, 3]) and its normalization, mean 0 and
    std 255: a float32 input takes pixel / 255, i.e. [0, 1] as retrain's models expect; a
    uint8 input takes the 0..255 pixels as they are (the int8 export pins its input scale
    to 1/255, see tflite_export.representative_dataset);
  - the labels, one per line in output order, packed into the .tflite as an associated file
    of the probabilities output (the <name>_labels.txt beside it stays, for label_image);
  - the unknown score output, where the export has one, as a plain feature output.

mediapipe is an optional extra (`pip install 'retrain[metadata]'`, about 250 MB with the
OpenCV it pulls in). Without it the .tflite is written without metadata, as before, and the
export warns once naming that command: label_image and the Python interpreter do not need
metadata, so a missing extra should not stop a training run at its last step.
"""

import sys
import types

from absl import logging

INSTALL_HINT = "pip install 'retrain[metadata]'"

# MediaPipe's ImageClassifier normalizes a float input as (pixel - mean) / std.
NORMALIZATION_MEAN = 0.0
NORMALIZATION_STD = 255.0

# What MediaPipe's image classifier writer (metadata_writers.image_classifier) writes; its
# general writer is used here because that one takes a single output.
_MODEL_NAME = "ImageClassifier"
_MODEL_DESCRIPTION = ("Identify the most prominent object in the image from a known set of "
                      "categories.")
_UNKNOWN_DESCRIPTION = ("How far the image is from the training images (higher: farther); "
                        "compare with unknown_threshold in <name>_calibration.json.")

# The metadata schema version of every field the image classifier writer fills in (general
# info, image input with normalization, classification output with a labels file): all are
# in schema 1.0.0 (mediapipe/tasks/metadata/metadata_schema.fbs marks later fields
# "Added in: 1.x"; this writer uses none of them).
_MIN_PARSER_VERSION = "1.0.0"


def _writer_module():
    """MediaPipe's image classifier metadata writer, or None if mediapipe is not installed.

    mediapipe 1.2.x wheels (checked: 0.10.35, 1.2.2, 1.2.3) omit the compiled
    _pywrap_metadata_version module that metadata.py imports for one function, the minimum
    metadata parser version; that one function is supplied here when the import fails.
    """
    try:
        # pylint: disable-next=import-outside-toplevel
        import mediapipe  # noqa: F401 pylint: disable=unused-import
    except ImportError:
        return None
    try:
        # pylint: disable-next=import-outside-toplevel,unused-import
        from mediapipe.tasks.cc.metadata.python import _pywrap_metadata_version  # noqa: F401
    except ImportError:
        _install_parser_version_shim("mediapipe.tasks.cc.metadata.python._pywrap_metadata_version")
    # pylint: disable-next=import-outside-toplevel
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, writer_utils
    return metadata_writer, writer_utils


def _install_parser_version_shim(name):
    """Registers module `name` (and its missing parent packages) with the one function
    metadata.py calls from it."""
    shim = types.ModuleType(name)
    shim.GetMinimumMetadataParserVersion = lambda metadata_buffer: _MIN_PARSER_VERSION
    sys.modules[name] = shim
    parent_name, _, child = name.rpartition(".")
    while parent_name and parent_name not in sys.modules:
        parent = types.ModuleType(parent_name)
        parent.__path__ = []  # A package, so `from parent import child` looks in sys.modules.
        sys.modules[parent_name] = parent
        setattr(parent, child, shim)
        shim = parent
        parent_name, _, child = parent_name.rpartition(".")
    if parent_name:
        setattr(sys.modules[parent_name], child, shim)


def available():
    """Whether the metadata writer (the `metadata` extra) is installed."""
    return _writer_module() is not None


def with_metadata(model_bytes, labels):
    """The .tflite with image classifier metadata, or model_bytes unchanged without mediapipe.

    Args:
      model_bytes: bytes of a .tflite with one image input [batch, H, W, 3] (float32 in
        [0, 1], or uint8 0..255) and one output of len(labels) class probabilities.
      labels: class names in output order.

    Returns:
      (bytes, bool): the model, and whether it carries metadata.
    """
    modules = _writer_module()
    if modules is None:
        logging.warning("Wrote the TensorFlow Lite model without metadata (labels, input "
                        "normalization), which MediaPipe Tasks and Android's Task Library need; "
                        "`%s` adds it.", INSTALL_HINT)
        return model_bytes, False
    metadata_writer, writer_utils = modules
    writer = metadata_writer.MetadataWriter(bytearray(model_bytes))
    writer.add_general_info(_MODEL_NAME, _MODEL_DESCRIPTION)
    writer.add_image_input([NORMALIZATION_MEAN], [NORMALIZATION_STD])
    # One metadata entry per output, in the flatbuffer's output order (which the converter
    # does not fix): the probabilities [B, C] carry the labels; a format-2 export's unknown
    # score [B] is a plain feature, which MediaPipe's classifier passes over.
    for rank in _output_ranks(bytearray(model_bytes), writer_utils):
        if rank == 2:
            writer.add_classification_output(metadata_writer.Labels().add(list(labels)))
        else:
            writer.add_feature_output(name="unknown_score", description=_UNKNOWN_DESCRIPTION)
    tflite_bytes, _ = writer.populate()
    # Now, not at interpreter exit: the writer's __del__ removes a temporary folder with
    # os.path, which is gone by then (an AttributeError traceback on stderr).
    del writer
    return bytes(tflite_bytes), True


def _output_ranks(model_buffer, writer_utils):
    """The rank of each output tensor of the .tflite, in output order."""
    subgraph = writer_utils.get_subgraph(model_buffer)
    return [subgraph.Tensors(subgraph.Outputs(index)).ShapeLength()
            for index in range(subgraph.OutputsLength())]
