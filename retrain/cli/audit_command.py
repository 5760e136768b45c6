"""The `retrain audit` command: the bottlenecks (cached or computed), then the data audit.

The only module that defines this command's flags; their defaults come from RetrainConfig.
"""

import functools
import sys

from absl import flags

from retrain import api
from retrain import preflight
from retrain.cli import command
from retrain.cli import console
from retrain.cli import shared_flags
from retrain.config import RetrainConfig
from retrain.errors import UserError
from retrain.runtime import precision

_DEFAULTS = RetrainConfig()
_PROGRAM = "retrain audit"

FLAGS = flags.FLAGS

# Flags copied into RetrainConfig under the same name (image_size is parsed first).
_CONFIG_FIELDS = ["image_dir", "output_dir", "bottleneck_dir", "tfhub_module", "backbone_cache_dir",
                  "keras_weights", "bottleneck_batch_size", "bottleneck_precision",
                  "max_image_pixels", "validation_percentage", "testing_percentage",
                  "random_seed"]


def define_flags(flag_values=FLAGS):
    """Defines the command's flags (run_main does; tests do it on their own FlagValues)."""
    string = functools.partial(flags.DEFINE_string, flag_values=flag_values)
    integer = functools.partial(flags.DEFINE_integer, flag_values=flag_values)
    string("image_dir", None, "Folder with one subfolder of images per label (required).")
    string("output_dir", _DEFAULTS.output_dir, "Where audit.json and audit.html are written.")
    string("bottleneck_dir", None, "Cache of feature vectors, shared with retrain. Default: "
           "<output_dir>/bottlenecks.")
    string("tfhub_module", _DEFAULTS.tfhub_module,
           "Image feature-vector module, as for retrain (the cache is per module).")
    string("image_size", None, "Module input size: 224 or 224x224. Default: what the module "
           "declares.")
    string("backbone_cache_dir", None,
           "Where built-in backbones are built. Default: $RETRAIN_CACHE_DIR, else ~/.cache/retrain.")
    string("keras_weights", None, "Weights file for a keras/... backbone.")
    integer("bottleneck_batch_size", _DEFAULTS.bottleneck_batch_size,
            "Images per forward pass when computing bottlenecks.", lower_bound=1)
    flags.DEFINE_enum("bottleneck_precision", _DEFAULTS.bottleneck_precision,
                      list(precision.PRECISIONS), "Number format of the module (as for retrain).",
                      flag_values=flag_values)
    integer("max_image_pixels", _DEFAULTS.max_image_pixels,
            "Images with more pixels are skipped.", lower_bound=1)
    integer("validation_percentage", _DEFAULTS.validation_percentage,
            "As for retrain: which images are validation, for telling leaks across splits.")
    integer("testing_percentage", _DEFAULTS.testing_percentage,
            "As for retrain: which images are test, for telling leaks across splits.")
    integer("random_seed", _DEFAULTS.random_seed, "Seed of the folds of the label check.",
            lower_bound=0)


def config_from_flags(flag_values=FLAGS):
    """The RetrainConfig the parsed flags describe (every other setting at its default)."""
    values = {name: flag_values[name].value for name in _CONFIG_FIELDS}
    values["image_dir"] = values["image_dir"] or _DEFAULTS.image_dir
    return RetrainConfig(image_size=shared_flags.parse_image_size(flag_values["image_size"].value),
                         **values)


def main(argv):
    if len(argv) > 1:
        command.usage_error(_PROGRAM, f"unexpected argument {argv[1]!r}; every setting is a "
                                      "--flag, such as --image_dir FOLDER")
    try:
        config = config_from_flags()
        # Checked before TensorFlow is imported, with warnings in the run's format.
        console.configure_log_format()
        checked = preflight.check_run(config.resolved())
        console.configure_logging()
        api.configure_devices(config)
        from retrain import pipeline  # pylint: disable=import-outside-toplevel
        if pipeline.audit_folder(config, checked) is None:
            raise UserError("The bottlenecks do not fit in memory, so the audit cannot run; "
                            "audit a part of the folder at a time.")
    except UserError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        _fail("Interrupted. Bottlenecks computed so far are cached; run the same command to "
              "resume.", status=130)
    return 0


def _fail(message, status=2):
    console.print_error(_PROGRAM, message)
    sys.exit(status)


HELP = command.HelpPage(
    program=_PROGRAM,
    usage="--image_dir FOLDER [--output_dir FOLDER] [flags]",
    summary=(
        "Audits FOLDER's labelled images using their bottlenecks (cached, or computed into the "
        "cache retrain uses): images whose folder is probably wrong, identical and "
        "near-identical images (and those that span the training, validation and test splits: "
        "leaks), and images far from the rest of their class. Writes audit.json and audit.html "
        "to --output_dir. Every retrain run does the same (--audit). See docs/audit.md."),
    examples=["retrain audit --image_dir photos --output_dir out"],
    groups=[
        ("Input and output", ["image_dir", "output_dir", "bottleneck_dir"]),
        ("Network", ["tfhub_module", "image_size"]),
    ],
)


def run_main(argv=None):
    define_flags()
    command.run(HELP, FLAGS, main, argv)
