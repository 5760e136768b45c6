"""retrain: transfer learning for folders of images.

    import retrain
    result = retrain.train("photos", output_dir="out")       # a retrain.TrainResult
    model = retrain.load(result.saved_model_dir)             # a retrain.Model
    model.top(["photo.jpg"], count=3)                        # [[(label, probability), ...]]

Settings are retrain.RetrainConfig's fields, the retrain command's flags (config.py).

The stages, one folder each, in the order data flows (pipeline.run reads like this list);
a module imports only from its own stage and earlier ones (tests/test_import_direction.py):

  runtime/     devices and thread pools, number formats, batch sizes chosen by timing,
               several forward passes at once, atomic files, progress lines
  data/        find the class folders and images (dataset), split them (split), decode
               (images), resize (preprocess), distort (distort, distortion_settings)
  features/    the module (modules, backbones/), bottlenecks computed once (bottlenecks) and
               cached (bottleneck_cache, row_store), distorted variants, the Beam pipeline
  training/    the new layer (train, sampling, feeding, checkpoint), fine-tuning (finetune*)
  export/      the SavedModel and labels file (saved_model), TensorFlow Lite (tflite_export,
               tflite_settings)
  predict/     label images with what export wrote (label_image, tflite_runtime)
  evaluation/  test-split scores (evaluate), metrics, the report, --evaluate on a folder
               (folder), the TFLite export against the SavedModel (export_check)
  config.py, preflight.py (checks before TensorFlow is imported), pipeline.py (the run)
  compare/     retrain compare and its from-scratch baseline
  api.py       train() and load()
  cli/         the commands: the only modules that define flags
"""

from retrain.api import Model
from retrain.api import TrainResult
# retrain.audit names both a stage folder and the API function: the folder is imported
# first, so that the function bound after it is what retrain.audit stays (a later import of
# the folder's modules does not rebind the name once the folder is loaded).
import retrain.audit as _audit_stage  # noqa: F401  pylint: disable=unused-import
from retrain.api import audit  # noqa: E402  pylint: disable=wrong-import-position
from retrain.api import load
from retrain.api import train
from retrain.config import RetrainConfig
from retrain.errors import UserError

__version__ = "0.1.0"

__all__ = ["train", "load", "audit", "Model", "TrainResult", "RetrainConfig", "UserError", "__version__"]
