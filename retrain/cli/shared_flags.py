"""Flag groups that several commands define the same way: training, augmentation,
fine-tuning and TFLite settings, and --image_size's parser. Defaults come from RetrainConfig."""

import functools
import re

from absl import flags

from retrain.config import DEFAULT_AUGMENTATION_COPIES
from retrain.config import FINE_TUNE_TOP_BATCH_SIZE
from retrain.config import FINE_TUNE_TOP_LEARNING_RATE
from retrain.config import FINE_TUNE_WHOLE_BATCH_SIZE
from retrain.config import FINE_TUNE_WHOLE_LEARNING_RATE
from retrain.config import RetrainConfig
from retrain.errors import UserError
from retrain.runtime import precision
from retrain.training.sampling import CLASS_BALANCE_MODES

_DEFAULTS = RetrainConfig()

FLAGS = flags.FLAGS

# Where the batch-size rule is explained for users (the code's is runtime/batch_tuning.py).
BATCH_SIZE_RULE = "docs/performance.md#batch-size"


class _WeightDecayParser(flags.ArgumentParser):
    """--weight_decay: "auto" (None: chosen on the validation split) or a number >= 0."""

    syntactic_help = 'a number >= 0, or "auto"'

    def parse(self, argument):
        if argument is None or str(argument).strip().lower() == "auto":
            return None
        try:
            value = float(argument)
        except ValueError:
            raise ValueError(f'{argument!r} is not a number; pass e.g. 0.001, or "auto"') from None
        if not value >= 0:  # also refuses nan
            raise ValueError(f"{argument!r} is negative; pass 0 or more, or \"auto\"")
        return value

    def flag_type(self):
        return "weight decay"


def define_training_flags(flag_values=FLAGS):
    """Flags shared by retrain and retrain compare: caching, splitting and training settings."""
    string = functools.partial(flags.DEFINE_string, flag_values=flag_values)
    integer = functools.partial(flags.DEFINE_integer, flag_values=flag_values)
    string("backbone_cache_dir", None,
           "Where built-in backbones are built. Default: $RETRAIN_CACHE_DIR, else ~/.cache/retrain.")
    integer("how_many_training_steps", _DEFAULTS.how_many_training_steps,
            "How many training steps to run.", lower_bound=0)
    flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Learning rate of the SGD steps.",
                       lower_bound=0.0, flag_values=flag_values)
    flags.DEFINE_float("momentum", _DEFAULTS.momentum,
                       "SGD momentum of the training steps (0: retrain.py's plain SGD).",
                       lower_bound=0.0, upper_bound=0.999, flag_values=flag_values)
    integer("train_batch_size", _DEFAULTS.train_batch_size, "Examples per training step.",
            lower_bound=1)
    flags.DEFINE(_WeightDecayParser(), "weight_decay",
                 "auto" if _DEFAULTS.weight_decay is None else str(_DEFAULTS.weight_decay),
                 "L2 penalty on the new layer's weights (weight_decay / 2 * |W|^2 on top of the "
                 "mean cross-entropy). auto: train the layer at 0, 1e-4, 1e-3 and 1e-2 at once "
                 "(in little more time than one) and keep the one with the lowest cross-entropy "
                 "on the validation split; fine-tuning uses the same value. (default: auto)",
                 flag_values=flag_values)
    flags.DEFINE_float("label_smoothing", _DEFAULTS.label_smoothing,
                       "Train towards 1 - s + s/C for the true class and s/C for the others "
                       "(0: retrain.py's one-hot targets).", lower_bound=0.0, upper_bound=0.99,
                       flag_values=flag_values)
    integer("eval_step_interval", _DEFAULTS.eval_step_interval,
            "Steps between validation evaluations.", lower_bound=1)
    flags.DEFINE_enum("class_balance", _DEFAULTS.class_balance, list(CLASS_BALANCE_MODES),
                      "Which images a training step draws. classes: a class uniformly, then one of "
                      "its images (retrain.py's); images: every image equally often; loss_weight: "
                      "images uniformly, cross-entropy weighted by inverse class frequency.",
                      flag_values=flag_values)
    integer("validation_batch_size", _DEFAULTS.validation_batch_size,
            "Validation examples per evaluation; -1 uses the whole validation split.", lower_bound=-1)
    integer("test_batch_size", _DEFAULTS.test_batch_size,
            "Test examples in the final evaluation; -1 uses the whole test split.", lower_bound=-1)
    integer("testing_percentage", _DEFAULTS.testing_percentage,
            "Percent of images held out for the final test.")
    integer("validation_percentage", _DEFAULTS.validation_percentage,
            "Percent of images held out for validation during training.")
    integer("bottleneck_batch_size", _DEFAULTS.bottleneck_batch_size,
            "Images per forward pass when computing bottlenecks. Default: 64 per GPU; on a CPU, "
            f"chosen by timing the first batches (the rule: {BATCH_SIZE_RULE}).",
            lower_bound=1)
    flags.DEFINE_enum("bottleneck_precision", _DEFAULTS.bottleneck_precision,
                      list(precision.PRECISIONS),
                      "Number format of the module while it computes bottlenecks. bfloat16 needs a "
                      "CPU with AVX512_BF16 or AMX and runs about 1.7x as fast there; its vectors "
                      "differ by a few percent and are cached apart.", flag_values=flag_values)
    integer("max_image_pixels", _DEFAULTS.max_image_pixels,
            "Images with more pixels are skipped (a guard against decompression bombs).", lower_bound=1)
    integer("random_seed", _DEFAULTS.random_seed, "Seed for sampling and initialisation.",
            lower_bound=0)
    define_augmentation_flags(flag_values)


def define_augmentation_flags(flag_values):
    """retrain.py's distortion flags, same names and meaning, and the number of variants."""
    integer = functools.partial(flags.DEFINE_integer, flag_values=flag_values)
    flags.DEFINE_boolean("flip_left_right", _DEFAULTS.flip_left_right,
                         "Whether to randomly flip half of the training images horizontally.",
                         flag_values=flag_values)
    integer("random_crop", _DEFAULTS.random_crop, "A percentage determining how much of a margin "
            "to randomly crop off the training images.")
    integer("random_scale", _DEFAULTS.random_scale, "A percentage determining how much to "
            "randomly scale up the size of the training images by.")
    integer("random_brightness", _DEFAULTS.random_brightness, "A percentage determining how "
            "much to randomly multiply the training image input pixels up or down by.")
    integer("augmentation_copies", _DEFAULTS.augmentation_copies,
            "Distorted variants of each training image, computed once and cached like "
            f"bottlenecks. Default: {DEFAULT_AUGMENTATION_COPIES} when a distortion flag is on, "
            "else 0.", lower_bound=0)


# The RetrainConfig fields that define_training_flags defines.
TRAINING_FLAG_FIELDS = [
    "backbone_cache_dir", "how_many_training_steps", "learning_rate", "momentum",
    "weight_decay", "label_smoothing", "train_batch_size", "eval_step_interval", "class_balance",
    "validation_batch_size", "test_batch_size", "testing_percentage", "validation_percentage", "bottleneck_batch_size",
    "bottleneck_precision", "max_image_pixels", "random_seed", "flip_left_right", "random_crop",
    "random_scale", "random_brightness", "augmentation_copies"]


def define_fine_tune_flags(flag_values):
    """Fine-tuning's flags (retrain.training.finetune)."""
    integer = functools.partial(flags.DEFINE_integer, flag_values=flag_values)
    flags.DEFINE_boolean("fine_tune", _DEFAULTS.fine_tune,
                         "After training the new layer on bottlenecks, train part of the module "
                         "and the layer together (the built-in EfficientNet-Lite backbones: their "
                         "top blocks on cached activations, minutes on a CPU; other modules: the "
                         "whole network on every image of every step, slow) and export the "
                         "fine-tuned weights.",
                         flag_values=flag_values)
    integer("fine_tune_top_blocks", _DEFAULTS.fine_tune_top_blocks,
            "Built-in EfficientNet-Lite backbones: fine-tune their last N blocks (and final "
            "convolution) on cached activations of the blocks below; 0 trains the whole network "
            "on images instead (the only path for other modules).", lower_bound=0)
    integer("fine_tune_epochs", _DEFAULTS.fine_tune_epochs,
            "Epochs of cached fine-tuning (--fine_tune_top_blocks): the length of its warm-up "
            "and cosine schedule. The last epoch is kept unless the validation split shows "
            "the frozen start better.",
            lower_bound=1)
    integer("fine_tune_steps", _DEFAULTS.fine_tune_steps,
            "Fine-tuning steps of the whole-network path.", lower_bound=1)
    flags.DEFINE_float("fine_tune_learning_rate", _DEFAULTS.fine_tune_learning_rate,
                       "Peak learning rate of the network while fine-tuning (default: "
                       f"{FINE_TUNE_TOP_LEARNING_RATE:g} with Adam on cached blocks, "
                       f"{FINE_TUNE_WHOLE_LEARNING_RATE:g} with SGD on the whole network).",
                       lower_bound=0.0, flag_values=flag_values)
    flags.DEFINE_float("fine_tune_momentum", _DEFAULTS.fine_tune_momentum,
                       "SGD momentum of the fine-tuning steps.", lower_bound=0.0,
                       upper_bound=0.999, flag_values=flag_values)
    integer("fine_tune_batch_size", _DEFAULTS.fine_tune_batch_size,
            "Images per fine-tuning step, split across all devices (default: "
            f"{FINE_TUNE_TOP_BATCH_SIZE} on cached blocks, {FINE_TUNE_WHOLE_BATCH_SIZE} on the "
            "whole network).", lower_bound=1)
    integer("fine_tune_eval_interval", _DEFAULTS.fine_tune_eval_interval,
            "Fine-tuning steps between validation evaluations; the best one is kept.",
            lower_bound=1)
    integer("fine_tune_layers", _DEFAULTS.fine_tune_layers,
            "Fine-tune only the module's last N layers (variables sharing a name up to the last "
            "'/', in the module's order: for the built-in backbones stem, block0_depthwise, ..., "
            "head); 0 fine-tunes all of them.", lower_bound=0)


def define_tflite_flags(flag_values):
    """The TensorFlow Lite export's flags (retrain.export.tflite_export)."""
    flags.DEFINE_string("tflite_output_file", None, "Also write a TensorFlow Lite model here "
                        "(e.g. model.tflite), its labels beside it as <name>_labels.txt, and its "
                        "test accuracy and size into metrics.json.", flag_values=flag_values)
    flags.DEFINE_enum("tflite_quantization", _DEFAULTS.tflite_quantization,
                      ["none", "dynamic", "float16", "int8"],
                      "none: float32; dynamic: int8 weights; float16: float16 weights; int8: full "
                      "integer, calibrated on training images.", flag_values=flag_values)
    flags.DEFINE_enum("tflite_int8_input", _DEFAULTS.tflite_int8_input, ["float32", "uint8"],
                      "For int8: float32 input and output in [0, 1], or uint8 input (0..255 "
                      "pixels) and output for integer-only accelerators.", flag_values=flag_values)
    flags.DEFINE_integer("tflite_representative_images", _DEFAULTS.tflite_representative_images,
                         "For int8: how many training images calibrate the quantization.",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_string("onnx_output_file", None, "Also write an ONNX model here (e.g. "
                        "model.onnx; needs pip install 'retrain[onnx]'), its labels beside it as "
                        "<name>_labels.txt, and its test accuracy and size into metrics.json.",
                        flag_values=flag_values)


def parse_image_size(text):
    """Parses "224" or "224x224" / "224,224" into (height, width); None stays None."""
    if text is None or text == "":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x,X]\s*(\d+)\s*)?", text)
    if not match:
        raise UserError(f"--image_size={text!r} is not a size; write 224 or 224x224 (height x width).")
    height = int(match.group(1))
    return (height, int(match.group(2) or height))
