"""The augmentation stage: cached bottlenecks of distorted copies of the training images.

retrain.py distorted every image at every step and ran the whole network on it, one image
per call. Here each training image gets a fixed number of distorted variants (retrain.data.distort
makes variant `k` of an image a pure function of its cache key), computed once through the
same batched pipeline as ordinary bottlenecks and cached beside them. Training then samples
originals and variants from memory; validation and test images are never distorted.
"""

import dataclasses

from absl import logging
import numpy as np

from retrain.data import distort
from retrain.data import distortion_settings
from retrain.features import bottlenecks
from retrain.runtime.precision import FLOAT32


@dataclasses.dataclass
class AugmentationResult:
    """What the stage added to the training split, for the run's summary and metrics.json."""

    distortions: distortion_settings.Distortions
    copies: int  # variants per training image
    variants: int  # variants added to training (copies x usable training images)
    computed: int  # variants this run computed; the rest came from the cache

    def as_dict(self):
        return {**dataclasses.asdict(self.distortions), "augmentation_copies": self.copies,
                "variants": self.variants, "variants_computed": self.computed}


def variant_files(image_files, distortions, copies):
    """The distorted variants of image_files, as [dataset.ImageFile].

    Variant k of an image is the image with its content_key replaced by
    augment.variant_key(content_key, distortions, k): same path, same label, its own cache
    entry. The order is image by image, copy 0 to copies - 1.
    """
    return [dataclasses.replace(image, content_key=distort.variant_key(
        image.content_key, distortions, copy_index))
            for image in image_files for copy_index in range(copies)]


def add_training_variants(training, module, bottleneck_dir, batch_size, max_pixels,
                          distortions, copies, precision=FLOAT32):
    """Appends the cached (or newly computed) distorted variants to the training split.

    Args:
      training: (features float32 [n, D], labels int32 [n], [dataset.ImageFile] of n).
      module: modules.FeatureModule the features come from.
      bottleneck_dir: root of the bottleneck cache, shared with the originals.
      batch_size: images per forward pass (None: devices.default_batch_size()).
      max_pixels: larger images are skipped (see images.decode_image).
      distortions: augment.Distortions, checked with augment.check_settings.
      copies: int >= 0, variants per training image; 0 returns training unchanged.
      precision: the forward pass's number format (retrain.runtime.precision), the originals' one.

    Returns:
      ((features float32 [n + m, D], labels int32 [n + m], [dataset.ImageFile] of n + m),
       AugmentationResult), where the m variant rows follow the n originals and each variant's
      ImageFile carries its variant key.
    """
    features, labels, image_files = training
    if not copies:
        return training, AugmentationResult(distortions, 0, 0, 0)
    logging.info("Augmentation: %d distorted copies of each of %d training images (%s).",
                 copies, len(image_files), distortions.as_flags())
    variants = bottlenecks.get_bottlenecks(variant_files(image_files, distortions, copies),
                                           module, bottleneck_dir, batch_size, max_pixels,
                                           distortions=distortions, precision=precision)
    if variants.failed:
        # The originals decoded a moment ago, so only a file changed or removed since fails.
        logging.warning("Left out %d variants whose image could not be read again.",
                        len(variants.failed))
    variant_labels = np.array([image.label_index for image in variants.image_files], np.int32)
    # Appending makes one in-memory array, even from a cache read from disk (row_store): the
    # variants multiply the training split, so augmentation is for sets that fit in memory.
    augmented = (np.concatenate([np.asarray(features, np.float32),
                                 np.asarray(variants.features, np.float32)]),
                 np.concatenate([labels, variant_labels]),
                 list(image_files) + variants.image_files)
    return augmented, AugmentationResult(distortions, copies, len(variants.image_files),
                                         variants.computed)
