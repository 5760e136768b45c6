"""Fitting what the export needs to be trusted: the temperature (training.calibration) and
the unknown detector (training.novelty), on the network that is exported.

Without fine-tuning that network is the frozen module, whose features are the cached
bottlenecks. Fine-tuning changes the module, so the cached bottlenecks no longer describe it:
the validation images, and the training images the detector keeps, go through the fine-tuned
extractor again (a forward pass over about a tenth of the images plus the bank sample).
"""

import dataclasses

from absl import logging
import numpy as np

from retrain.training import calibration
from retrain.training import finetune_data
from retrain.training import novelty


@dataclasses.dataclass
class TrustSettings:
    known_share: float = 0.95  # share of validation images the threshold keeps known
    method: str = novelty.DEFAULT_METHOD  # one of novelty.METHODS
    neighbors: int = 1  # knn's k
    bank_size: int = 1000  # knn: training vectors kept in the export
    seed: int = 0


@dataclasses.dataclass
class Trust:
    temperature: float
    detector: novelty.UnknownDetector
    validation_count: int  # validation images both were fitted on
    features_recomputed: bool  # True after fine-tuning (see the module docstring)

    def describe(self):
        """metrics.json's "unknown" entry (no arrays)."""
        return {**self.detector.describe(), "validation_count": self.validation_count,
                "features_recomputed": self.features_recomputed}


def check_settings(settings):
    """Raises UserError for settings that cannot work (the flags bound them too; preflight
    makes the same check before TensorFlow is imported)."""
    novelty.check_settings(settings.known_share, settings.method, settings.neighbors,
                           settings.bank_size)


def fit(head, data, num_classes, settings, features_of=None, image_size=None, batch_size=32,
        max_pixels=None):
    """Fits the temperature and the unknown detector.

    Args:
      head: train.Head that is exported.
      data: pipeline.split_arrays' dict: "training", "validation" -> (features, labels,
        [dataset.ImageFile]).
      features_of: None when the cached bottlenecks are the exported network's features;
        after fine-tuning, the fine-tuned extractor (images float32 [B, H, W, 3] -> [B, D]),
        with image_size, batch_size and max_pixels to read the images as training does.

    Returns:
      Trust.
    """
    check_settings(settings)
    training_features, training_labels, training_images = data["training"]
    validation_features, validation_labels, validation_images = data["validation"]
    training_labels = np.asarray(training_labels)
    bank_rows = None
    if features_of is not None:
        validation_features, ok = _recompute(features_of, validation_images, image_size,
                                             batch_size, max_pixels, "Validation features")
        validation_labels = np.asarray(validation_labels)[ok]
        # Only the rows the detector keeps: the bank sample (Mahalanobis fits on it too).
        bank_rows = novelty.sample_bank(training_labels, settings.bank_size, settings.seed)
        recomputed, ok = _recompute(features_of, [training_images[row] for row in bank_rows],
                                    image_size, batch_size, max_pixels, "Training features")
        training_features, training_labels = recomputed, training_labels[bank_rows][ok]
    validation_logits = calibration.logits(np.asarray(validation_features), head)
    temperature = calibration.fit_temperature(validation_logits, validation_labels)
    detector = novelty.fit_detector(
        settings.method, training_features, training_labels, validation_features,
        validation_logits, num_classes, settings.known_share, k=settings.neighbors,
        bank_size=None if bank_rows is not None else settings.bank_size, seed=settings.seed,
        temperature=temperature)
    if not len(validation_labels):
        logging.warning("No validation images: the temperature stays 1 and no image is called "
                        "unknown (raise --validation_percentage to fit them).")
    else:
        logging.info("Calibration: temperature %.3f; unknown score %s, threshold %.4g keeps %.0f%% "
                     "of %d validation images known.", temperature, detector.method,
                     detector.threshold, 100 * settings.known_share, len(validation_labels))
    return Trust(temperature, detector, len(validation_labels), features_of is not None)


def _recompute(features_of, image_files, image_size, batch_size, max_pixels, what):
    """(features float32 [n_ok, D] through features_of, ok bool [len(image_files)])."""
    features, ok = finetune_data.apply_to_images(features_of, image_files, image_size,
                                                 batch_size, max_pixels, what=what)
    if features is None:
        return np.zeros([0, 0], np.float32), ok
    return features[ok], ok
