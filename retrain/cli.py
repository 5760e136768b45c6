"""The `retrain` command: flags in, a RetrainConfig out, then the pipeline.

This is the only module that defines retrain's flags; their defaults come from RetrainConfig.
"""

import dataclasses
import re
import sys

from absl import app
from absl import flags
from absl import logging

from retrain import console
from retrain.config import RetrainConfig
from retrain.errors import UserError

_DEFAULTS = RetrainConfig()

flags.DEFINE_string("image_dir", _DEFAULTS.image_dir, "Folder with one subfolder of images per label.")
flags.DEFINE_string("output_dir", _DEFAULTS.output_dir,
                    "Everything the run writes goes under this folder unless a flag below says otherwise.")
flags.DEFINE_string("bottleneck_dir", None, "Cache of feature vectors. Default: <output_dir>/bottlenecks.")
flags.DEFINE_string("saved_model_dir", None, "Where to export the SavedModel. Default: <output_dir>/saved_model.")
flags.DEFINE_string("output_labels", None, "Labels file, one per line. Default: <output_dir>/output_labels.txt.")
flags.DEFINE_string("summaries_dir", None, "TensorBoard logs. Default: <output_dir>/summaries.")
flags.DEFINE_string("metrics_file", None, "Metrics JSON. Default: <output_dir>/metrics.json.")
flags.DEFINE_string("tfhub_module", _DEFAULTS.tfhub_module,
                    "Image feature-vector module: a built-in backbone (efficientnet_lite0, "
                    "efficientnet_lite1, efficientnet_lite2, keras/vgg16, ...), a TF Hub / Kaggle "
                    "handle or URL, or a local SavedModel folder.")
flags.DEFINE_string("image_size", None,
                    "Module input size, as 224 or 224x224 (height x width). Default: what the module declares.")
flags.DEFINE_string("backbone_cache_dir", None,
                    "Where built-in backbones are built. Default: $RETRAIN_CACHE_DIR, else ~/.cache/retrain.")
flags.DEFINE_string("keras_weights", None,
                    "Weights file for a keras/... backbone (default: the Keras weight store, online).")
flags.DEFINE_boolean("prepare_module_only", False,
                     "Build or download --tfhub_module into its cache, then exit (no --image_dir needed).")
flags.DEFINE_integer("how_many_training_steps", _DEFAULTS.how_many_training_steps,
                     "How many training steps to run.", lower_bound=0)
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Learning rate of the SGD steps.",
                   lower_bound=0.0)
flags.DEFINE_integer("train_batch_size", _DEFAULTS.train_batch_size,
                     "Examples per training step.", lower_bound=1)
flags.DEFINE_integer("eval_step_interval", _DEFAULTS.eval_step_interval,
                     "Steps between validation evaluations.", lower_bound=1)
flags.DEFINE_integer("validation_batch_size", _DEFAULTS.validation_batch_size,
                     "Validation examples per evaluation; -1 uses the whole validation split.",
                     lower_bound=-1)
flags.DEFINE_integer("test_batch_size", _DEFAULTS.test_batch_size,
                     "Test examples in the final evaluation; -1 uses the whole test split.",
                     lower_bound=-1)
flags.DEFINE_integer("testing_percentage", _DEFAULTS.testing_percentage,
                     "Percent of images held out for the final test.")
flags.DEFINE_integer("validation_percentage", _DEFAULTS.validation_percentage,
                     "Percent of images held out for validation during training.")
flags.DEFINE_boolean("print_misclassified_test_images", _DEFAULTS.print_misclassified_test_images,
                     "List every misclassified test image with its predicted label.")
flags.DEFINE_integer("bottleneck_batch_size", _DEFAULTS.bottleneck_batch_size,
                     "Images per forward pass when computing bottlenecks.", lower_bound=1)
flags.DEFINE_integer("max_image_pixels", _DEFAULTS.max_image_pixels,
                     "Images with more pixels are skipped (guards against decompression bombs).",
                     lower_bound=1)
flags.DEFINE_integer("random_seed", _DEFAULTS.random_seed, "Seed for sampling and initialisation.")

FLAGS = flags.FLAGS

# Flags that are copied into RetrainConfig field by field under the same name.
_CONFIG_FIELDS = [field.name for field in dataclasses.fields(RetrainConfig) if field.name != "image_size"]


def parse_image_size(text):
    """Parses "224" or "224x224" / "224,224" into (height, width); None stays None."""
    if text is None or text == "":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x,X]\s*(\d+)\s*)?", text)
    if not match:
        raise UserError(f"--image_size={text!r} is not a size; write 224 or 224x224 (height x width).")
    height = int(match.group(1))
    return (height, int(match.group(2) or height))


def config_from_flags(flag_values=FLAGS):
    """Builds the RetrainConfig the parsed flags describe."""
    values = {name: flag_values[name].value for name in _CONFIG_FIELDS}
    return RetrainConfig(image_size=parse_image_size(flag_values.image_size), **values)


def main(argv):
    if len(argv) > 1:
        _fail(f"Unexpected arguments {argv[1:]!r}; every setting is a --flag (see --help).")
    console.configure_logging()
    # Imported here so that --help and flag errors do not wait for TensorFlow.
    from retrain import pipeline  # pylint: disable=import-outside-toplevel
    try:
        config = config_from_flags()
        if FLAGS.prepare_module_only:
            module = pipeline.resolve(config)
            logging.info("Module %s is ready at %s", module.handle, module.saved_model_dir)
            return 0
        pipeline.run(config)
    except UserError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        _fail("Interrupted. Bottlenecks computed so far are cached; run the same command to resume.",
              status=130)
    return 0


def _fail(message, status=2):
    console.print_error("retrain", message)
    sys.exit(status)


def run_main():
    app.run(main)


if __name__ == "__main__":
    run_main()
