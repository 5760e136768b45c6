"""The settings of one retrain run, with their defaults written once.

The command line (retrain.cli) reads its flag defaults from here; library code takes a
RetrainConfig and never reads flags.
"""

import dataclasses
import os
from typing import Optional, Tuple

from retrain import images


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
    train_batch_size: int = 100
    eval_step_interval: int = 10  # steps between validation lines
    validation_batch_size: int = 100  # -1: the whole validation split
    test_batch_size: int = -1  # -1: the whole test split
    testing_percentage: int = 10
    validation_percentage: int = 10
    print_misclassified_test_images: bool = False

    # None: 16 on CPU (the fastest in scripts/benchmark.py on 2 cores), 64 with a GPU.
    bottleneck_batch_size: Optional[int] = None
    max_image_pixels: int = images.DEFAULT_MAX_PIXELS
    # Split the CPU into this many logical devices (1: leave it whole). For testing the
    # multi-device code paths (MirroredStrategy over several GPUs) on a machine without GPUs.
    logical_cpu_devices: int = 1
    random_seed: int = 0  # fixed, so the same images and flags give the same model

    # TensorFlow Lite export (retrain.tflite_export). None: no .tflite is written.
    tflite_output_file: Optional[str] = None
    # none | dynamic (int8 weights) | float16 (float16 weights) | int8 (full integer).
    tflite_quantization: str = "none"
    # int8 only: float32 input and output, or uint8 for integer-only accelerators.
    tflite_int8_input: str = "float32"
    # int8 only: training images that calibrate activation ranges (TFLite suggests 100-500).
    tflite_representative_images: int = 100

    def resolved(self):
        """A copy with every output path filled in from output_dir."""
        def under_output(path, name):
            return path if path else os.path.join(self.output_dir, name)

        return dataclasses.replace(
            self,
            bottleneck_dir=under_output(self.bottleneck_dir, "bottlenecks"),
            saved_model_dir=under_output(self.saved_model_dir, "saved_model"),
            output_labels=under_output(self.output_labels, "output_labels.txt"),
            summaries_dir=under_output(self.summaries_dir, "summaries"),
            metrics_file=under_output(self.metrics_file, "metrics.json"),
        )
