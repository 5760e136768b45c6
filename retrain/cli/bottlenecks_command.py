"""The `retrain bottlenecks` command: computes the
bottleneck cache with an Apache Beam pipeline, for `retrain` to train from.

The only module that defines this command's flags; their defaults come from RetrainConfig.
Every flag it does not define is handed to Beam as a pipeline option (--direct_num_workers=...,
--project=..., ...).
"""

import functools
import importlib.util
import logging as std_logging
import sys

from absl import flags
from absl import logging

from retrain.cli import command
from retrain.cli import console
from retrain.cli import shared_flags
from retrain.config import RetrainConfig
from retrain.errors import UserError

_DEFAULTS = RetrainConfig()
_PROGRAM = "retrain bottlenecks"
# Beam's local runner. Beam 2.77's "DirectRunner" first tries to download its Prism runner
# binary from the internet and, offline, falls back to this same FnApiRunner.
DEFAULT_RUNNER = "FnApiRunner"
_QUIET_BEAM_LOGGERS = ["apache_beam.runners.worker", "apache_beam.runners.portability.local_job_service",
                       "apache_beam.transforms.util"]

FLAGS = flags.FLAGS

# Flags copied into RetrainConfig under the same name (image_size is parsed first).
_CONFIG_FIELDS = ["image_dir", "bottleneck_dir", "tfhub_module", "backbone_cache_dir",
                  "keras_weights", "bottleneck_batch_size", "max_image_pixels"]


def define_flags(flag_values=FLAGS):
    """Defines the command's flags (run_main does; tests do it on their own FlagValues)."""
    string = functools.partial(flags.DEFINE_string, flag_values=flag_values)
    integer = functools.partial(flags.DEFINE_integer, flag_values=flag_values)
    string("image_dir", None, "Folder with one subfolder of images per label (required).")
    string("bottleneck_dir", _DEFAULTS.resolved().bottleneck_dir,
           "Cache of feature vectors; pass the same folder to retrain. On a distributed runner, "
           "a folder that the launcher and every worker mount.")
    string("tfhub_module", _DEFAULTS.tfhub_module,
           "Image feature-vector module: a built-in backbone, a TF Hub / Kaggle handle or URL, or "
           "a local SavedModel folder. Remote workers must reach it at the same path or handle.")
    string("image_size", None,
           "Module input size: 224 or 224x224 (height x width). Default: what the module declares.")
    string("backbone_cache_dir", None,
           "Where built-in backbones are built. Default: $RETRAIN_CACHE_DIR, else ~/.cache/retrain.")
    string("keras_weights", None, "Weights file for a keras/... backbone.")
    integer("bottleneck_batch_size", _DEFAULTS.bottleneck_batch_size,
            "Images per forward pass on a worker. Default: 64 per GPU; on a CPU, the size "
            f"retrain uses for small jobs ({shared_flags.BATCH_SIZE_RULE}).", lower_bound=1)
    string("runner", DEFAULT_RUNNER,
           "Apache Beam runner: FnApiRunner (local; add --direct_num_workers=2 "
           "--direct_running_mode=multi_processing for several processes), DirectRunner, "
           "DataflowRunner, FlinkRunner, SparkRunner, ... Other Beam options pass through.")
    integer("max_image_pixels", _DEFAULTS.max_image_pixels,
            "Images with more pixels are skipped (a guard against decompression bombs).", lower_bound=1)


def config_from_flags(flag_values=FLAGS):
    """The resolved RetrainConfig the parsed flags describe."""
    values = {name: flag_values[name].value for name in _CONFIG_FIELDS}
    values["image_dir"] = values["image_dir"] or _DEFAULTS.image_dir
    config = RetrainConfig(image_size=shared_flags.parse_image_size(flag_values["image_size"].value), **values)
    return config.resolved()


def check_beam_installed():
    """Raises UserError if Apache Beam (an optional extra) is not installed.

    Only looks for it: importing it takes seconds, and main does that after logging is set up.
    """
    if importlib.util.find_spec("apache_beam") is None:
        raise UserError("Apache Beam is not installed; install it with: pip install 'retrain[beam]'.")


def import_beam_pipeline():
    """Imports retrain.features.beam_bottlenecks (and so Apache Beam and TensorFlow) with quiet logging."""
    console.configure_logging()
    # Beam's BigQuery client warns on the root logger at import that optional Google Cloud
    # libraries are missing; this pipeline does not use them.
    root_logger = std_logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(std_logging.ERROR)
    try:
        from retrain.features import beam_bottlenecks  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise UserError(f"Apache Beam cannot be imported ({error}); reinstall it with: "
                        "pip install 'retrain[beam]'.") from error
    finally:
        root_logger.setLevel(level)
    # Beam's local runner logs its plumbing (state cache, batch statistics, worker harness
    # lines) at INFO, which would bury the progress; runners' own job lines stay.
    for name in _QUIET_BEAM_LOGGERS:
        std_logging.getLogger(name).setLevel(std_logging.WARNING)
    return beam_bottlenecks


def main(argv):
    try:
        # Checked first so that flag errors and a missing Beam do not wait for TensorFlow.
        config = config_from_flags()
        check_beam_installed()
        beam_bottlenecks = import_beam_pipeline()
        report = beam_bottlenecks.compute_cache(config, [f"--runner={FLAGS.runner}", *argv[1:]])
    except UserError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        _fail("Interrupted. Shards written so far are kept; run the same command to resume.",
              status=130)
    print_report(report)
    return 0


def print_report(report):
    logging.info("Done: %d images, of which %d were cached, %d computed by Beam and %d undecodable "
                 "(listed above). Cache: %s", report.images, report.cached_before, report.computed,
                 report.undecodable, report.cache_dir)
    if report.missing_after > report.undecodable:
        logging.warning("%d images are still not in the cache (a worker failed?); run the same "
                        "command again to compute them.", report.missing_after - report.undecodable)


def _fail(message, status=2):
    console.print_error(_PROGRAM, message)
    sys.exit(status)


HELP = command.HelpPage(
    program=_PROGRAM,
    usage="--image_dir FOLDER --bottleneck_dir FOLDER [--runner RUNNER] [Beam options]",
    summary=(
        "Computes the bottleneck cache of FOLDER's images with an Apache Beam pipeline (the "
        "beam extra: pip install 'retrain[beam]'), locally on several processes or on a "
        "cluster runner, so that retrain then trains from the cache without computing it. "
        "Flags this command does not know are handed to Beam as pipeline options."),
    examples=[
        "retrain bottlenecks --image_dir photos --bottleneck_dir cache "
        "--direct_num_workers=2 --direct_running_mode=multi_processing",
        "retrain --image_dir photos --bottleneck_dir cache --output_dir out",
    ],
    groups=[
        ("Input and output", ["image_dir", "bottleneck_dir"]),
        ("Network", ["tfhub_module", "image_size"]),
        ("Beam", ["runner"]),
    ],
)


def run_main(argv=None):
    define_flags()
    command.run(HELP, FLAGS, main, argv, known_only=True)
