"""The Python API: retrain.train(...) and retrain.load(...), for notebooks and scripts.

    import retrain
    result = retrain.train("photos", output_dir="out", how_many_training_steps=2000)
    print(result.test_accuracy, result.saved_model_dir)
    model = retrain.load(result.saved_model_dir)
    model.labels                                   # ['daisy', 'roses', ...]
    model.predict(["photos/daisy/1.jpg"])          # float32 [1, num_labels]
    model.top(["photos/daisy/1.jpg"], count=3)     # [[('daisy', 0.97), ...]]

The retrain command runs the same steps as train() (its flags set the fields of
RetrainConfig), and label_image loads what load() loads.
"""

import dataclasses
import json
import os
from typing import List, Optional, Tuple

from retrain.config import RetrainConfig
from retrain.errors import UserError


@dataclasses.dataclass
class TrainResult:
    """What a run wrote and scored. Paths are as the config resolved them."""

    saved_model_dir: str
    labels_file: str
    metrics_file: str
    report_file: str
    labels: List[str]
    test_accuracy: float  # top-1, in [0, 1]; nan without test images
    test_count: int
    metrics: dict  # the contents of metrics.json
    run: object  # pipeline.RunResult: history, per-class metrics, TFLite and fine-tuning results


def train(image_dir, output_dir="retrain_output", **settings):
    """Trains a classifier on image_dir's labelled subfolders, like the retrain command.

    Args:
      image_dir: folder with one subfolder of images per label.
      output_dir: where everything is written (RetrainConfig.resolved() says where exactly).
      **settings: any other RetrainConfig field, e.g. how_many_training_steps=2000,
        tfhub_module="efficientnet_lite2", random_crop=10, fine_tune=True.

    Returns:
      TrainResult.

    Raises:
      UserError: a setting, folder or image set that cannot work; the message says the fix.
    """
    config = _config(image_dir, output_dir, settings)
    # pylint: disable=import-outside-toplevel
    from retrain import pipeline
    from retrain import preflight
    from retrain.evaluation import report
    resolved = config.resolved()
    checked = preflight.check_run(resolved)
    configure_devices(config)
    run = pipeline.run(config, checked)
    with open(resolved.metrics_file, encoding="utf-8", errors="surrogateescape") as metrics_file:
        metrics = json.load(metrics_file)
    return TrainResult(
        saved_model_dir=resolved.saved_model_dir, labels_file=resolved.output_labels,
        metrics_file=resolved.metrics_file,
        report_file=os.path.join(os.path.dirname(resolved.metrics_file), report.REPORT_FILE),
        labels=list(run.labels), test_accuracy=run.test.top1_accuracy, test_count=run.test.count,
        metrics=metrics, run=run)


def audit(image_dir, output_dir="retrain_output", **settings):
    """Audits image_dir's labelled images, like `retrain audit` (docs/audit.md).

    Args:
      image_dir: folder with one subfolder of images per label.
      output_dir: where audit.json and audit.html go; the bottleneck cache defaults to
        <output_dir>/bottlenecks, so a later train() with the same output_dir reuses it.
      **settings: RetrainConfig fields (tfhub_module, bottleneck_dir, validation_percentage, ...).

    Returns:
      retrain.audit.audit.AuditResult: .label_issues, .duplicates, .outliers (lists of dicts
      with paths relative to image_dir), .counts, .leaks(), .audit_file.

    Raises:
      UserError: as train() does; also when the bottlenecks do not fit in memory.
    """
    config = _config(image_dir, output_dir, settings)
    # pylint: disable=import-outside-toplevel
    from retrain import pipeline
    from retrain import preflight
    checked = preflight.check_run(config.resolved())
    configure_devices(config)
    result = pipeline.audit_folder(config, checked)
    if result is None:
        raise UserError("The bottlenecks do not fit in memory, so the audit cannot run; audit a "
                        "part of the folder at a time.")
    return result


def _config(image_dir, output_dir, settings):
    """RetrainConfig(image_dir, output_dir, **settings), with a UserError for unknown names."""
    known = {field.name for field in dataclasses.fields(RetrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UserError(f"Unknown setting {unknown[0]!r}; the settings are RetrainConfig's "
                        f"fields ({', '.join(sorted(known - {'image_dir', 'output_dir'}))}).")
    if isinstance(settings.get("image_size"), int):
        settings["image_size"] = (settings["image_size"], settings["image_size"])
    return RetrainConfig(image_dir=os.fspath(image_dir), output_dir=os.fspath(output_dir),
                         **settings)


def configure_devices(config):
    """TensorFlow's thread pools and logical devices for a run of config (the retrain command
    calls this too). First: TensorFlow cannot split a device or resize its thread pools once it
    has used them; in a notebook where it already has, they stay as they are."""
    from retrain.runtime import devices  # pylint: disable=import-outside-toplevel
    devices.configure_threads(forward_streams_allowed=not config.fine_tune
                              and config.logical_cpu_devices <= 1)
    devices.configure_logical_cpu_devices(config.logical_cpu_devices)


class Model:
    """A classifier that retrain exported (SavedModel, .tflite or .onnx), ready to label images."""

    def __init__(self, classifier):
        self._classifier = classifier

    @property
    def labels(self) -> List[str]:
        """Label names; column i of predict's output is labels[i]."""
        return list(self._classifier.labels)

    @property
    def image_size(self) -> Tuple[int, int]:
        """(height, width) the network sees; images are resized to it."""
        return tuple(self._classifier.image_size)

    @property
    def unknown_threshold(self) -> Optional[float]:
        """An image is unknown when its unknown score is above this (None: the model has
        no unknown score; inf: it never calls one unknown)."""
        return getattr(self._classifier, "unknown_threshold", None)

    def predict(self, images, batch_size: Optional[int] = None, return_unknown=False):
        """Probabilities of each label for each image (temperature-calibrated).

        Args:
          images: a list of image file paths, or of uint8 arrays [height, width, 3] (any
            size: resized as in training), or one uint8 array [n, height, width, 3].
          return_unknown: also return the unknown scores and whether each is unknown.

        Returns:
          float32 array [len(images), len(labels)]; with return_unknown, (that, unknown
          scores float32 [len(images)], unknown bool [len(images)]), the last two None for a
          model without an unknown score.

        Raises:
          UserError: an image file cannot be read as an image (the message names it).
        """
        if isinstance(images, (str, os.PathLike)):
            images = [images]
        if len(images) and isinstance(images[0], (str, os.PathLike)):
            probabilities, scores = self._predict_files([os.fspath(path) for path in images],
                                                        batch_size)
        else:
            probabilities, scores = self._predict_arrays(images)
        if not return_unknown:
            return probabilities
        threshold = self.unknown_threshold
        unknown = None if scores is None or threshold is None else scores > threshold
        return probabilities, scores, unknown

    def top(self, images, count=5, batch_size=None):
        """[[(label, probability)] of the `count` likeliest labels, highest first] per image,
        after ("unknown", its unknown score) when the image is unknown (as label_image prints)."""
        from retrain.predict import label_image  # pylint: disable=import-outside-toplevel
        probabilities, scores, unknown = self.predict(images, batch_size, return_unknown=True)
        rows = []
        for index, row in enumerate(probabilities):
            top = label_image.top_predictions(label_image.Prediction(None, row), self.labels, count)
            if unknown is not None and unknown[index]:
                top.insert(0, ("unknown", float(scores[index])))
            rows.append(top)
        return rows

    def _predict_files(self, paths, batch_size):
        import numpy as np  # pylint: disable=import-outside-toplevel
        from retrain.predict import label_image  # pylint: disable=import-outside-toplevel
        rows, scores = [], []
        for prediction in label_image.classify_files(self._classifier, paths, batch_size):
            if prediction.error:
                raise UserError(f"Cannot label {prediction.path}: {prediction.error}")
            rows.append(prediction.probabilities)
            scores.append(prediction.unknown_score)
        known = None if None in scores else np.asarray(scores, np.float32)
        return np.stack(rows).astype(np.float32), known

    def _predict_arrays(self, arrays):
        import numpy as np  # pylint: disable=import-outside-toplevel
        from retrain.data import preprocess  # pylint: disable=import-outside-toplevel
        pixels = []
        for array in arrays:
            array = np.asarray(array)
            if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
                raise UserError(f"An image array is {array.dtype} {list(array.shape)}; pass uint8 "
                                "arrays [height, width, 3] (RGB), or image file paths.")
            pixels.append(preprocess.resize_pixels(array, self.image_size))
        if not pixels:
            return np.zeros([0, len(self.labels)], np.float32), None
        from retrain.predict import label_image  # pylint: disable=import-outside-toplevel
        batch = preprocess.as_unit_float(np.stack(pixels))
        probabilities, scores = label_image.predict_with_unknown(self._classifier, batch)
        return (np.asarray(probabilities, np.float32),
                None if scores is None else np.asarray(scores, np.float32))


def load(model_path, labels_file=None):
    """Loads what retrain exported: a SavedModel folder, or a .tflite or .onnx file (its
    labels file beside it, or labels_file). Returns a Model."""
    # pylint: disable=import-outside-toplevel
    model_path = os.fspath(model_path)
    if model_path.endswith(".tflite") and not os.path.isdir(model_path):
        from retrain.predict import tflite_runtime
        return Model(tflite_runtime.load_classifier(model_path, labels_file))
    if model_path.endswith(".onnx") and not os.path.isdir(model_path):
        from retrain.predict import onnx_runtime
        return Model(onnx_runtime.load_classifier(model_path, labels_file))
    if labels_file:
        raise UserError("labels_file goes with a .tflite or .onnx model; a SavedModel carries "
                        "its labels.")
    from retrain.predict import label_image
    return Model(label_image.load_classifier(model_path))
