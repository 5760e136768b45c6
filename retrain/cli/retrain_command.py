"""The `retrain` command: flags in, a RetrainConfig out, then the pipeline.

This is the only module that defines retrain's flags; their defaults come from RetrainConfig.
"""

import dataclasses
import functools
import os
import sys

from absl import flags
from absl import logging

from retrain import api
from retrain import preflight
from retrain.cli import command
from retrain.cli import console
from retrain.cli import shared_flags
from retrain.config import RetrainConfig
from retrain.errors import UserError

_DEFAULTS = RetrainConfig()

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines retrain's flags (run_main does; tests do it on their own FlagValues)."""
    string = functools.partial(flags.DEFINE_string, flag_values=flag_values)
    integer = functools.partial(flags.DEFINE_integer, flag_values=flag_values)
    boolean = functools.partial(flags.DEFINE_boolean, flag_values=flag_values)
    # No default shown: it is required (RetrainConfig's "" means not given).
    string("image_dir", None, "Folder with one subfolder of images per label (required).")
    string("output_dir", _DEFAULTS.output_dir,
           "Everything the run writes goes under this folder, unless a flag below says otherwise.")
    string("bottleneck_dir", None, "Cache of feature vectors. Default: <output_dir>/bottlenecks.")
    string("saved_model_dir", None, "Where to export the SavedModel. Default: <output_dir>/saved_model.")
    integer("saved_model_version", _DEFAULTS.saved_model_version,
            "The SavedModel goes into <saved_model_dir>/<this>/, the numbered version folder TF "
            "Serving loads; 0: into --saved_model_dir itself.", lower_bound=0)
    flags.DEFINE_float("unknown_known_share", _DEFAULTS.unknown_known_share,
                       "The unknown threshold keeps this share of the validation images known; "
                       "label_image calls an image scoring above it unknown.", lower_bound=0.01,
                       upper_bound=1.0, flag_values=flag_values)
    flags.DEFINE_enum("unknown_method", _DEFAULTS.unknown_method,
                      ["max_logit", "energy", "msp", "knn", "mahalanobis"],
                      "The unknown score (docs/trust.md#the-score): max_logit measured "
                      "best; knn and mahalanobis add training statistics to the export.",
                      flag_values=flag_values)
    integer("unknown_neighbors", _DEFAULTS.unknown_neighbors,
            "--unknown_method=knn: the k-th nearest training vector's distance.", lower_bound=1)
    integer("unknown_bank_size", _DEFAULTS.unknown_bank_size,
            "--unknown_method=knn: training vectors the export keeps (a sample by class).",
            lower_bound=1)
    string("output_labels", None, "Labels file. Default: <output_dir>/output_labels.txt.")
    string("summaries_dir", None, "TensorBoard logs. Default: <output_dir>/summaries.")
    string("metrics_file", None, "Metrics JSON. Default: <output_dir>/metrics.json.")
    string("checkpoint_path", None,
           "Training state for --resume (the head's in head/). Default: <output_dir>/checkpoints.")
    boolean("resume", _DEFAULTS.resume,
            "Continue training from the checkpoint in --checkpoint_path; same result as a run "
            "that was never interrupted. Without a checkpoint, warns and starts from step 0.")
    flags.DEFINE_float("checkpoint_every_seconds", _DEFAULTS.checkpoint_every_seconds,
                       "Seconds between checkpoint writes during training (also written at the "
                       "end and on Ctrl-C); 0: at every evaluation step.", lower_bound=0.0,
                       flag_values=flag_values)
    string("tfhub_module", _DEFAULTS.tfhub_module,
           "Image feature-vector module: a built-in backbone (efficientnet_lite0, efficientnet_lite1, "
           "efficientnet_lite2, keras/vgg16, ...), a TF Hub / Kaggle handle or URL, or a local "
           "SavedModel folder.")
    string("image_size", None,
           "Module input size: 224 or 224x224 (height x width). Default: what the module declares.")
    string("keras_weights", None,
           "Weights file for a keras/... backbone. Default: the Keras weight store (online).")
    boolean("prepare_module_only", False,
            "Build or download --tfhub_module into its cache and exit (no --image_dir needed).")
    boolean("print_misclassified_test_images", _DEFAULTS.print_misclassified_test_images,
            "List every misclassified test image with its predicted label.")
    boolean("verbose", _DEFAULTS.verbose,
            "Print every evaluation's Step lines on the console too (they always go to "
            "<output_dir>/training_log.txt); without it, training shows one line per tenth.")
    integer("bottleneck_memory_mb", _DEFAULTS.bottleneck_memory_mb,
            "Hold the bottlenecks in memory only if twice their size fits in this many MB; "
            "else read them from the cache on disk as training needs them (0: always). "
            "Default: half the memory available when the run starts.", lower_bound=0)
    integer("logical_cpu_devices", _DEFAULTS.logical_cpu_devices,
            "For testing without GPUs: split the CPU into this many logical devices, so that "
            "retrain runs its multi-device code (tf.distribute.MirroredStrategy) as it would "
            "on that many GPUs.",
            lower_bound=1)
    boolean("audit", _DEFAULTS.audit,
            "After the bottlenecks, audit the images: possible label errors, duplicates (and "
            "leaks across splits), outliers, in <output_dir>/audit.json and audit.html "
            "(docs/audit.md).")
    boolean("exclude_flagged", _DEFAULTS.exclude_flagged,
            "Leave the images the audit flags (confident label errors, outliers, training "
            "copies of leaked images) out of training; no file is moved or deleted.")
    shared_flags.define_training_flags(flag_values)
    shared_flags.define_fine_tune_flags(flag_values)
    shared_flags.define_tflite_flags(flag_values)


# Flags copied into RetrainConfig under the same name (image_size is parsed first).
_CONFIG_FIELDS = [field.name for field in dataclasses.fields(RetrainConfig) if field.name != "image_size"]


def config_from_flags(flag_values=FLAGS):
    """Builds the RetrainConfig the parsed flags describe."""
    values = {name: flag_values[name].value for name in _CONFIG_FIELDS}
    values["image_dir"] = values["image_dir"] or _DEFAULTS.image_dir
    return RetrainConfig(image_size=shared_flags.parse_image_size(flag_values["image_size"].value), **values)


HELP = command.HelpPage(
    program="retrain",
    usage="--image_dir FOLDER [--output_dir FOLDER] [flags]",
    summary=(
        "Trains an image classifier on FOLDER, in which each subfolder is a label and holds "
        "that label's images. retrain splits the images into training, validation and test "
        "sets, computes each image's feature vector with a pretrained ImageNet network once "
        "(cached in --bottleneck_dir), trains a new softmax layer on them, reports the test "
        "accuracy, and writes a SavedModel, a labels file, metrics.json and report.html to "
        "--output_dir. label_image then labels new images with it."),
    examples=[
        "retrain --image_dir photos --output_dir out",
        "retrain --image_dir photos --output_dir out --random_crop 10 --fine_tune",
        "label_image --saved_model_dir out/saved_model --image photo.jpg",
    ],
    groups=[
        ("Input and output", ["image_dir", "output_dir", "bottleneck_dir"]),
        ("Network", ["tfhub_module", "image_size"]),
        ("Training", ["how_many_training_steps", "learning_rate", "resume"]),
        ("More accuracy", ["random_crop", "flip_left_right", "fine_tune"]),
        ("Export", ["tflite_output_file", "tflite_quantization", "onnx_output_file"]),
    ],
    subcommands=[
        ("compare", "compare backbones and methods on one folder, in one table"),
        ("bottlenecks", "compute the bottleneck cache with Apache Beam (the beam extra)"),
        ("audit", "find possible label errors, duplicates, leaks across splits and outliers"),
    ],
)


def main(argv):
    if len(argv) > 1:
        command.usage_error("retrain", f"unexpected argument {argv[1]!r}; every setting is a "
                                       "--flag, such as --image_dir FOLDER")
    config = None
    try:
        config = config_from_flags()
        checked = None if FLAGS.prepare_module_only else check_before_tensorflow(config)
        # Inside the try: it imports TensorFlow, the first seconds in which a Ctrl-C lands.
        console.configure_logging()
        api.configure_devices(config)
        from retrain import pipeline  # pylint: disable=import-outside-toplevel
        if FLAGS.prepare_module_only:
            module = pipeline.resolve(config)
            logging.info("Module %s is ready at %s", module.handle, module.saved_model_dir)
            return 0
        pipeline.run(config, checked)
    except UserError as error:
        _fail(str(error))
    except KeyboardInterrupt as interrupt:
        _fail(interrupted_message(interrupt, config and config.resolved().checkpoint_path),
              status=130)
    return 0


def check_before_tensorflow(config):
    """preflight.check_run on the resolved config, with its warnings (skipped files) logged
    in the run's format. Returns the preflight.CheckedRun for pipeline.run."""
    console.configure_log_format()
    return preflight.check_run(config.resolved())


def interrupted_message(interrupt, checkpoint_path):
    """What to do after Ctrl-C: --resume if there is a training checkpoint to continue from."""
    from retrain.training import checkpoint  # pylint: disable=import-outside-toplevel
    step = getattr(interrupt, "step", None)
    if step is not None:
        return (f"Interrupted at training step {step}; the training state is saved in "
                f"{interrupt.directory}. Run the same command with --resume to continue.")
    message = "Interrupted. Bottlenecks computed so far are cached; run the same command to resume"
    head_directory = checkpoint_path and checkpoint.head_directory(checkpoint_path)
    if head_directory and os.path.exists(checkpoint.state_file(head_directory)):
        return f"{message} (with --resume to continue training from {head_directory})."
    return message + "."


def _fail(message, status=2):
    console.print_error("retrain", message)
    sys.exit(status)


def run_main():
    # `retrain compare ...` is its own command with its own flags.
    if sys.argv[1:2] == ["compare"]:
        from retrain.cli import compare_command  # pylint: disable=import-outside-toplevel
        compare_command.run_main([f"{sys.argv[0]} compare", *sys.argv[2:]])
        return
    # `retrain bottlenecks ...` computes the cache with Apache Beam (the `beam` extra).
    if sys.argv[1:2] == ["bottlenecks"]:
        from retrain.cli import bottlenecks_command  # pylint: disable=import-outside-toplevel
        bottlenecks_command.run_main([f"{sys.argv[0]} bottlenecks", *sys.argv[2:]])
        return
    # `retrain audit ...` audits the images (retrain.audit), from the same bottleneck cache.
    if sys.argv[1:2] == ["audit"]:
        from retrain.cli import audit_command  # pylint: disable=import-outside-toplevel
        audit_command.run_main([f"{sys.argv[0]} audit", *sys.argv[2:]])
        return
    define_flags()
    command.run(HELP, FLAGS, main)


if __name__ == "__main__":
    run_main()
