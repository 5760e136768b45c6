#!/usr/bin/env python3
"""How good can a linear head be? scikit-learn's LogisticRegression on retrain's own bottlenecks.

  python scripts/linear_probe_reference.py --image_dir DIR [--bottleneck_dir DIR] [--tfhub_module M]

Uses the same images, the same split and the same cached bottlenecks as `retrain` with those
flags (run retrain first so the cache is filled), fits LogisticRegression on the training
split (C chosen on the validation split), and prints its test accuracy next to what a
retrain-style head reaches with the default training settings. Needs scikit-learn.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from retrain import bottlenecks  # pylint: disable=wrong-import-position
from retrain import dataset  # pylint: disable=wrong-import-position
from retrain import modules  # pylint: disable=wrong-import-position
from retrain import pipeline  # pylint: disable=wrong-import-position
from retrain import split  # pylint: disable=wrong-import-position
from retrain import train  # pylint: disable=wrong-import-position
from retrain.config import RetrainConfig  # pylint: disable=wrong-import-position


def load_split_bottlenecks(image_dir, module_handle, bottleneck_dir, validation, testing):
    module = modules.resolve_module(module_handle)
    collection = dataset.find_images(image_dir)
    vectors = bottlenecks.get_bottlenecks(collection.images, module, bottleneck_dir, 64,
                                          RetrainConfig.max_image_pixels)
    splits = split.split_images(vectors.image_files, collection.labels, validation, testing)
    arrays = {name: (features, labels)
              for name, (features, labels, _) in pipeline.split_arrays(vectors, splits).items()}
    return arrays, len(collection.labels)


def fit_logistic_regression(arrays):
    from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
    best = None
    for strength in (0.01, 0.1, 1.0, 10.0):
        model = LogisticRegression(C=strength, max_iter=2000).fit(*arrays["training"])
        score = model.score(*arrays["validation"])
        if best is None or score > best[0]:
            best = (score, strength, model)
    return best[1], best[2].score(*arrays["testing"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image_dir", required=True)
    parser.add_argument("--output_dir", default="retrain_output")
    parser.add_argument("--bottleneck_dir", default=None)
    parser.add_argument("--tfhub_module", default="efficientnet_lite0")
    parser.add_argument("--validation_percentage", type=int, default=10)
    parser.add_argument("--testing_percentage", type=int, default=10)
    args = parser.parse_args()
    bottleneck_dir = args.bottleneck_dir or os.path.join(args.output_dir, "bottlenecks")
    arrays, num_classes = load_split_bottlenecks(args.image_dir, args.tfhub_module, bottleneck_dir,
                                                 args.validation_percentage, args.testing_percentage)
    strength, sklearn_accuracy = fit_logistic_regression(arrays)
    defaults = RetrainConfig()
    settings = train.TrainingSettings(defaults.how_many_training_steps, defaults.train_batch_size,
                                      defaults.learning_rate, defaults.eval_step_interval,
                                      defaults.validation_batch_size, defaults.random_seed)
    head, _ = train.train_head(*arrays["training"], *arrays["validation"], num_classes, settings)
    features, labels = arrays["testing"]
    head_accuracy = float(np.mean(np.argmax(head.probabilities(features), axis=1) == labels))
    print(f"test images: {len(labels)}")
    print(f"LogisticRegression (C={strength}): {100 * sklearn_accuracy:.1f}%")
    print(f"retrain head (default settings):  {100 * head_accuracy:.1f}%")


if __name__ == "__main__":
    main()
