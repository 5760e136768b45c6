"""The settings of one retrain run, with their defaults written once.

The command line (retrain.cli.retrain_command) reads its flag defaults from here; library code takes a
RetrainConfig and never reads flags.
"""

import dataclasses
import os
from typing import Optional, Tuple

from retrain.data import images
from retrain.runtime.precision import FLOAT32

# Distorted variants per training image when a distortion flag is on and
# --augmentation_copies is not given: 4 copies quintuple the training images, at the cost
# of 4 more forward passes per training image, once (they are cached).
DEFAULT_AUGMENTATION_COPIES = 4

# What `retrain compare --methods augmented` distorts when no distortion flag is given: mild
# crop, scale and brightness, and no flip, since a mirrored digit or letter is another symbol.
DEFAULT_COMPARE_DISTORTIONS = {"random_crop": 10, "random_scale": 10, "random_brightness": 10}

# --fine_tune_learning_rate's default per path. Whole network, SGD: on the MNIST example with
# efficientnet_lite0, 1e-3 and 1e-4 lost validation accuracy within 50 steps; 1e-5 held it
# (folded BatchNorm makes some kernels' gradients large). Cached top blocks, Adam (whose step
# does not depend on a gradient's scale): BENCHMARKS.md, "Fine-tuning from the top (issue 27)".
FINE_TUNE_WHOLE_LEARNING_RATE = 0.00001
FINE_TUNE_TOP_LEARNING_RATE = 0.0003
# The cached path's other settings (no flags): images per step, dropout on the features
# before the new layer, the new layer's rate over the network's, and mixup of the cached
# activations (manifold mixup: Verma et al., 2019), whose share of the other image is drawn
# from Beta(alpha, alpha) per batch.
FINE_TUNE_TOP_BATCH_SIZE = 32
FINE_TUNE_WHOLE_BATCH_SIZE = 16
FINE_TUNE_DROPOUT = 0.2
FINE_TUNE_HEAD_RATE_MULTIPLIER = 10.0
FINE_TUNE_MIXUP_ALPHA = 0.2


@dataclasses.dataclass
class RetrainConfig:
    # Folder with one subfolder of images per label.
    image_dir: str = ""
    # Everything a run writes goes under here unless a path below says otherwise.
    output_dir: str = "retrain_output"
    # Cache of feature vectors; default <output_dir>/bottlenecks. Share it between runs.
    bottleneck_dir: Optional[str] = None
    saved_model_dir: Optional[str] = None  # default <output_dir>/saved_model
    output_labels: Optional[str] = None  # default <output_dir>/output_labels.txt
    summaries_dir: Optional[str] = None  # TensorBoard logs; default <output_dir>/summaries
    metrics_file: Optional[str] = None  # default <output_dir>/metrics.json
    # Training state for --resume (the head's in head/); default <output_dir>/checkpoints.
    checkpoint_path: Optional[str] = None
    resume: bool = False  # continue training from the checkpoint in checkpoint_path
    # Seconds between checkpoint writes during training; they are also written at the end and
    # on Ctrl-C. A write takes milliseconds, and a killed run loses at most this much training.
    checkpoint_every_seconds: float = 10.0

    # Built-in backbone name, TF Hub handle or URL, or a local SavedModel folder.
    tfhub_module: str = "efficientnet_lite0"
    image_size: Optional[Tuple[int, int]] = None  # (height, width); None: what the module declares
    backbone_cache_dir: Optional[str] = None  # built-in backbones; None: $RETRAIN_CACHE_DIR or ~/.cache
    keras_weights: Optional[str] = None  # weights file for keras/... backbones

    # retrain.py's defaults.
    how_many_training_steps: int = 4000
    learning_rate: float = 0.01
    # SGD momentum. retrain.py had none (0); 0.9 lets 4000 steps converge (see train.py).
    momentum: float = 0.9
    # L2 penalty on the new layer's weights (retrain.training.train). None ("auto"): trained at each of
    # train.WEIGHT_DECAY_CANDIDATES at once, the lowest validation cross-entropy kept; fine-
    # tuning then uses the one kept.
    weight_decay: Optional[float] = None
    # Targets 1 - s + s/C for the true class, s/C for the others. 0.1 raised test accuracy on
    # all four reference sets of BENCHMARKS.md (0.3-2 points), with or without weight decay.
    label_smoothing: float = 0.1
    train_batch_size: int = 100
    eval_step_interval: int = 10  # steps between validation lines
    # Which examples a training step draws (retrain.training.sampling): "classes" (retrain.py's: a class
    # uniformly, then one of its images), "images" (every image equally often) or
    # "loss_weight" (images uniformly, cross-entropy weighted by inverse class frequency).
    class_balance: str = "classes"
    validation_batch_size: int = 100  # -1: the whole validation split
    test_batch_size: int = -1  # -1: the whole test split
    testing_percentage: int = 10
    validation_percentage: int = 10
    print_misclassified_test_images: bool = False
    # Every evaluation's Step lines on the console too; they always go to the training log
    # (<output_dir>/training_log.txt), and the console gets a line per tenth of the run.
    verbose: bool = False

    # None: retrain.runtime.batch_tuning.batch_size_candidates decides (the rule is written
    # there once, and for users in docs/performance.md#batch-size).
    bottleneck_batch_size: Optional[int] = None
    # The module's number format while it computes bottlenecks (retrain.runtime.precision): "float32",
    # or "bfloat16" on CPUs with AVX512_BF16 or AMX, faster, with vectors a few percent off.
    bottleneck_precision: str = FLOAT32
    max_image_pixels: int = images.DEFAULT_MAX_PIXELS
    # MB the bottleneck array may take in memory, counted twice (the array and training's copy
    # of its training split); above it, training reads the vectors from the cache on disk as it
    # goes. None: half the memory available when the run starts. 0: always from disk.
    bottleneck_memory_mb: Optional[int] = None
    # Split the CPU into this many logical devices (1: leave it whole). For testing the
    # multi-device code paths (MirroredStrategy over several GPUs) on a machine without GPUs.
    logical_cpu_devices: int = 1
    random_seed: int = 0  # fixed, so the same images and flags give the same model

    # Random distortions of training images, retrain.py's flags (see retrain.data.distort). Each
    # training image gets augmentation_copies distorted variants, computed once in batches and
    # cached like bottlenecks; validation and test images are never distorted.
    flip_left_right: bool = False  # mirror half of the variants
    random_crop: int = 0  # percent margin around the crop window, 0-100
    random_scale: int = 0  # percent by which the margin is randomly enlarged, 0-100
    random_brightness: int = 0  # percent up or down that pixel values are multiplied by, 0-99
    # None: DEFAULT_AUGMENTATION_COPIES when a distortion is on, else 0 (no augmentation).
    augmentation_copies: Optional[int] = None

    # Fine-tuning (retrain.training.finetune): after the new layer is trained on bottlenecks, train the
    # module and the layer together on the training images, keeping the best validation step.
    fine_tune: bool = False
    # Built-in EfficientNet-Lite backbones fine-tune their last fine_tune_top_blocks MBConv
    # blocks (and the final 1x1 convolution) on cached activations (retrain.training.finetune_top):
    # fine_tune_epochs epochs, keeping the last unless validation shows the start better
    # (finetune_top.keeps_fine_tuned). Other modules, or fine_tune_top_blocks=0, train the
    # whole network for fine_tune_steps steps (retrain.training.finetune). BENCHMARKS.md,
    # "Fine-tuning from the top (issue 27)", has the measurements behind these numbers: four
    # blocks gained as much as two on the digit sets and more on textures (+0.9 against +0.0
    # over three seeds), at about the same time (the frozen lower part's one pass over the
    # images dominates).
    fine_tune_top_blocks: int = 4
    fine_tune_epochs: int = 8
    fine_tune_steps: int = 500
    # None: FINE_TUNE_TOP_LEARNING_RATE on the cached path (Adam), FINE_TUNE_WHOLE_LEARNING_RATE
    # on the whole-network path (SGD with momentum).
    fine_tune_learning_rate: Optional[float] = None
    fine_tune_momentum: float = 0.9  # SGD momentum
    # Images per step (across all devices); None: FINE_TUNE_TOP_BATCH_SIZE on the cached path,
    # FINE_TUNE_WHOLE_BATCH_SIZE on the whole-network path (CPU-friendly).
    fine_tune_batch_size: Optional[int] = None
    fine_tune_eval_interval: int = 50  # steps between validation evaluations
    # Fine-tune only the module's last N layers (in the order it lists its variables); 0: all.
    fine_tune_layers: int = 0

    # The "unknown" answer (retrain.training.novelty): the threshold keeps this share of the
    # validation images known, so about 1 - it of new images like the training ones are called
    # unknown. unknown_method: one of novelty.METHODS; max_logit measured best and carries
    # nothing (BENCHMARKS.md, "Calibration and unknown").
    unknown_known_share: float = 0.95
    unknown_method: str = "max_logit"
    unknown_neighbors: int = 1  # knn's k
    # knn: training vectors the export keeps (class-stratified sample): 1000 x 1280 float32
    # adds 5 MB to an efficientnet_lite0 export.
    unknown_bank_size: int = 1000
    # The SavedModel goes into <saved_model_dir>/<version>/ (TF Serving's layout); 0: into
    # saved_model_dir itself.
    saved_model_version: int = 1

    # The data audit (retrain.audit, docs/audit.md) after the bottlenecks: possible label
    # errors, duplicates and leaks across splits, outliers, in <output_dir>/audit.json and
    # audit.html. It costs a few percent of a cached run.
    audit: bool = True
    # Leave the images the audit flags out of the training split (files are never moved);
    # runs the audit even with audit=False.
    exclude_flagged: bool = False

    # TensorFlow Lite export (retrain.export.tflite_export). None: no .tflite is written.
    tflite_output_file: Optional[str] = None
    # none | dynamic (int8 weights) | float16 (float16 weights) | int8 (full integer).
    tflite_quantization: str = "none"
    # int8 only: float32 input and output, or uint8 for integer-only accelerators.
    tflite_int8_input: str = "float32"
    # int8 only: training images that calibrate activation ranges (TFLite suggests 100-500).
    tflite_representative_images: int = 100
    # ONNX export (retrain.export.onnx_export; the `onnx` extra). None: no .onnx is written.
    onnx_output_file: Optional[str] = None

    def any_distortion(self):
        """True if a distortion flag is on."""
        return bool(self.flip_left_right or self.random_crop or self.random_scale
                    or self.random_brightness)

    def resolved(self):
        """A copy with every output path filled in from output_dir, and the number of copies."""
        def under_output(path, name):
            return path if path else os.path.join(self.output_dir, name)

        return dataclasses.replace(
            self,
            bottleneck_dir=under_output(self.bottleneck_dir, "bottlenecks"),
            saved_model_dir=under_output(self.saved_model_dir, "saved_model"),
            output_labels=under_output(self.output_labels, "output_labels.txt"),
            summaries_dir=under_output(self.summaries_dir, "summaries"),
            metrics_file=under_output(self.metrics_file, "metrics.json"),
            augmentation_copies=(self.augmentation_copies if self.augmentation_copies is not None
                                 else DEFAULT_AUGMENTATION_COPIES if self.any_distortion() else 0),
            checkpoint_path=under_output(self.checkpoint_path, "checkpoints"),
        )
