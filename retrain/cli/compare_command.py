"""The `retrain compare` command: several backbones
and methods on the same split, one table.

The only module that defines compare's flags; their defaults come from RetrainConfig and
baseline.BaselineSettings.
"""

import functools
import sys

from absl import flags

from retrain.cli import command
from retrain.cli import console
from retrain.cli import shared_flags
from retrain.config import RetrainConfig
from retrain.data import dataset
from retrain.errors import UserError

_DEFAULTS = RetrainConfig()

FLAGS = flags.FLAGS

# Flags shared with `retrain`, copied into the RetrainConfig every row starts from.
_SHARED_FIELDS = ["image_dir", "bottleneck_dir", *shared_flags.TRAINING_FLAG_FIELDS]


def define_flags(flag_values=FLAGS):
    """Defines compare's flags (run_main does; tests do it on their own FlagValues)."""
    # pylint: disable=import-outside-toplevel
    from retrain.compare.baseline import BaselineSettings
    baseline_defaults = BaselineSettings()
    string = functools.partial(flags.DEFINE_string, flag_values=flag_values)
    integer = functools.partial(flags.DEFINE_integer, flag_values=flag_values)
    listing = functools.partial(flags.DEFINE_list, flag_values=flag_values)
    string("image_dir", None, "Folder with one subfolder of images per label (required).")
    listing("modules", [], "Modules to compare, separated by commas: built-in backbone names, "
            "TF Hub handles or URLs, or local SavedModel folders.")
    listing("methods", ["frozen"], "Methods to try with each module: frozen (cached bottlenecks "
            "and a new softmax layer), augmented, fine_tuned, fine_tuned_augmented; the table "
            "shows each row's gain over its module's frozen row.")
    string("output_dir", "compare_output", "Where the table, the chart and one run folder per row go.")
    string("bottleneck_dir", None,
           "Cache of feature vectors shared by every row. Default: <output_dir>/bottlenecks.")
    shared_flags.define_training_flags(flag_values)
    flags.DEFINE_boolean("baseline", True, "Add a row for a small CNN trained from scratch.",
                         flag_values=flag_values)
    integer("baseline_epochs", baseline_defaults.epochs, "Epochs of the from-scratch CNN.",
            lower_bound=1)
    integer("baseline_image_size", baseline_defaults.image_size,
            "Side in pixels of the images the from-scratch CNN sees.", lower_bound=8)


def settings_from_flags(flag_values=FLAGS):
    """(base RetrainConfig, modules, method names, output_dir, BaselineSettings or None)."""
    # pylint: disable=import-outside-toplevel
    from retrain.compare.baseline import BaselineSettings
    values = {name: flag_values[name].value for name in _SHARED_FIELDS}
    values["image_dir"] = values["image_dir"] or _DEFAULTS.image_dir
    config = RetrainConfig(**values)
    baseline_settings = None
    if flag_values["baseline"].value:
        baseline_settings = BaselineSettings(image_size=flag_values["baseline_image_size"].value,
                                             epochs=flag_values["baseline_epochs"].value,
                                             seed=flag_values["random_seed"].value)
    modules = [module.strip() for module in flag_values["modules"].value if module.strip()]
    methods = [method.strip() for method in flag_values["methods"].value if method.strip()]
    return config, modules, methods, flag_values["output_dir"].value, baseline_settings


HELP = command.HelpPage(
    program="retrain compare",
    usage=("--image_dir FOLDER --modules A,B,... "
           "[--methods frozen,augmented,fine_tuned,fine_tuned_augmented] [flags]"),
    summary=(
        "Trains one classifier per module and method on the same split of FOLDER's images, "
        "plus a small CNN trained from scratch as a baseline, and prints one table of their "
        "test accuracy, time and size (also written as comparison.md, .csv and .json, with "
        "a chart, to --output_dir). Bottlenecks are cached and shared by the rows."),
    examples=[
        "retrain compare --image_dir photos --modules efficientnet_lite0,efficientnet_lite2",
        "retrain compare --image_dir photos --modules efficientnet_lite0 "
        "--methods frozen,augmented,fine_tuned",
    ],
    groups=[
        ("What to compare", ["image_dir", "modules", "methods", "baseline"]),
        ("Output", ["output_dir", "bottleneck_dir"]),
        ("Training", ["how_many_training_steps", "random_seed"]),
    ],
    more="Every retrain training flag applies to each row.",
)


def main(argv):
    if len(argv) > 1:
        command.usage_error(HELP.program, f"unexpected argument {argv[1]!r}; every setting is a "
                                          "--flag, such as --modules A,B")
    try:
        config, modules, methods, output_dir, baseline_settings = settings_from_flags()
        check_before_tensorflow(config, modules)
        # Inside the try: it imports TensorFlow, the first seconds in which a Ctrl-C lands.
        console.configure_logging()
        # Imported here so that --help and flag errors do not wait for TensorFlow.
        from retrain.compare import compare  # pylint: disable=import-outside-toplevel
        from retrain.runtime import devices  # pylint: disable=import-outside-toplevel
        # Before TensorFlow runs anything. Fine-tuning and the from-scratch CNN train one
        # network at a time, so they keep one pass over every core.
        devices.configure_threads(
            forward_streams_allowed=(not any(name.startswith("fine_tuned") for name in methods)
                                     and baseline_settings is None))
        rows = compare.compare(config, modules, methods, output_dir, baseline_settings)
    except UserError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        _fail("Interrupted. Bottlenecks computed so far are cached; run the same command to resume.",
              status=130)
    print(compare.format_markdown(rows), end="")
    return 1 if any(row.error for row in rows) else 0


def check_before_tensorflow(config, modules):
    """Raises UserError for an empty --modules or a bad image folder, before the slow imports
    (compare.compare checks the rest)."""
    if not modules:
        raise UserError("--modules is empty; pass one or more modules separated by commas.")
    console.configure_log_format()
    dataset.find_images(config.image_dir)


def _fail(message, status=2):
    console.print_error(HELP.program, message)
    sys.exit(status)


def run_main(argv=None):
    define_flags()
    command.run(HELP, FLAGS, main, argv)
