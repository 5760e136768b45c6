"""The checks a run makes before it imports TensorFlow: settings, folders and images.

Importing TensorFlow takes 4-5 s, so the command-line tools run these first: a mistyped
value, a missing folder or a class without images is reported in well under a second, and
nothing is written. pipeline.run makes the same checks for callers of the library.
Nothing here imports TensorFlow (a test checks it).
"""

import dataclasses
import importlib.util
import os

from retrain.data import dataset
from retrain.data import distortion_settings
from retrain.data import split
from retrain.export import tflite_settings
from retrain.features import handles
from retrain.errors import UserError
from retrain.runtime import files
from retrain.runtime import precision
from retrain.training import novelty
from retrain.training import sampling

@dataclasses.dataclass
class CheckedRun:
    """What the checks found, for pipeline.run to start from."""

    collection: dataset.ImageCollection
    splits: dict  # split name -> [dataset.ImageFile]


def check_run(config):
    """Checks a resolved RetrainConfig and finds and splits its images.

    Returns:
      CheckedRun.

    Raises:
      UserError: a setting, folder or image set that cannot work; the message names the
        value and the fix.
    """
    check_settings(config)
    collection = dataset.find_images(config.image_dir)
    # Split now: it checks every class can fill each split before anything is written.
    splits = split.split_images(collection.images, collection.labels,
                                config.validation_percentage, config.testing_percentage)
    check_outputs_writable(config)
    return CheckedRun(collection, splits)


def check_settings(config):
    """Raises UserError for settings of a resolved RetrainConfig that cannot work together."""
    split.check_percentages(config.validation_percentage, config.testing_percentage)
    distortion_settings.check_settings(distortions(config), config.augmentation_copies)
    precision.check(config.bottleneck_precision, "--bottleneck_precision")
    tflite_settings.check_settings(config.tflite_output_file, config.tflite_quantization,
                          config.tflite_int8_input)
    sampling.check_class_balance(config.class_balance)
    check_module_handle(config.tfhub_module)
    check_onnx_extra(config.onnx_output_file)
    novelty.check_settings(config.unknown_known_share, config.unknown_method,
                           config.unknown_neighbors, config.unknown_bank_size)
    if config.saved_model_version < 0:
        raise UserError(f"--saved_model_version={config.saved_model_version} is negative; pass "
                        "a version folder number such as 1, or 0 for no version folder.")


def check_onnx_extra(onnx_output_file):
    """Raises UserError if --onnx_output_file is set but the `onnx` extra is not installed:
    found before training, not after it."""
    if not onnx_output_file:
        return
    missing = [name for name in ("tf2onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"--onnx_output_file={onnx_output_file!r} needs {' and '.join(missing)}, "
                        "which is not installed; run `pip install 'retrain[onnx]'`, or drop "
                        "--onnx_output_file.")


def distortions(config):
    """The distortions.Distortions that config asks for."""
    return distortion_settings.Distortions(config.flip_left_right, config.random_crop,
                                       config.random_scale, config.random_brightness)


def check_module_handle(handle):
    """Raises UserError if --tfhub_module names a local path that is not a folder.

    Built-in names and hub handles (owner/model/...) are checked when the module is resolved.
    """
    if not handle:
        raise UserError("--tfhub_module is empty; pass a built-in backbone such as "
                        "efficientnet_lite0, a TF Hub handle or URL, or a SavedModel folder.")
    handles.check_local_path(handle)


def check_outputs_writable(config):
    """Fails before any long work if an output folder of a resolved config cannot be written."""
    folders = {
        "--output_dir": config.output_dir,
        "--bottleneck_dir": config.bottleneck_dir,
        "--saved_model_dir": os.path.dirname(os.path.abspath(config.saved_model_dir)),
        "--output_labels": os.path.dirname(os.path.abspath(config.output_labels)),
        "--summaries_dir": config.summaries_dir,
        "--metrics_file": os.path.dirname(os.path.abspath(config.metrics_file)),
        "--checkpoint_path": config.checkpoint_path,
    }
    if config.tflite_output_file:
        folders["--tflite_output_file"] = os.path.dirname(os.path.abspath(config.tflite_output_file))
    if config.onnx_output_file:
        folders["--onnx_output_file"] = os.path.dirname(os.path.abspath(config.onnx_output_file))
    for flag, folder in folders.items():
        try:
            # Leaves no folder behind: a run that fails a later setup check writes nothing.
            files.probe_writable_dir(folder)
        except OSError as error:
            raise UserError(f"Cannot write to {folder!r} ({error.strerror or error}); pass a "
                            f"writable folder with {flag}.") from error
