"""The stable training / validation / testing split.

retrain.py's rule, kept: a file's split is decided by the SHA-1 of its name, so the split is
the same on every run and a file stays in its split when images are added. Changed: the
hash is of the path relative to the image folder, so mounting the folder elsewhere (as
Docker does) does not reshuffle it.
"""

import collections
import hashlib
import os
import re

from absl import logging

from retrain.errors import UserError

MAX_NUM_IMAGES_PER_CLASS = 2**27 - 1

SPLITS = ("training", "validation", "testing")


def split_percentage(relative_path):
    """Where a file falls in [0, 100], from a hash of its path relative to the image folder.

    Everything after "_nohash_" in the name is ignored, so near-duplicates such as
    "leaf1_nohash_a.jpg" and "leaf1_nohash_b.jpg" always land in the same split.
    """
    hash_name = re.sub(r"_nohash_.*$", "", relative_path)
    hash_value = int(hashlib.sha1(os.fsencode(hash_name)).hexdigest(), 16)
    return (hash_value % (MAX_NUM_IMAGES_PER_CLASS + 1)) * (100.0 / MAX_NUM_IMAGES_PER_CLASS)


def split_name(relative_path, validation_percentage, testing_percentage):
    """Returns "training", "validation" or "testing" for one file, by retrain.py's rule."""
    percentage = split_percentage(relative_path)
    if percentage < validation_percentage:
        return "validation"
    if percentage < testing_percentage + validation_percentage:
        return "testing"
    return "training"


def check_percentages(validation_percentage, testing_percentage):
    """Raises UserError unless both are in [0, 100) and leave room for training."""
    for name, value in (("--validation_percentage", validation_percentage),
                        ("--testing_percentage", testing_percentage)):
        if not 0 <= value < 100:
            raise UserError(f"{name}={value} is out of range; use a percentage from 0 to 99.")
    if validation_percentage + testing_percentage >= 100:
        raise UserError(
            f"--validation_percentage={validation_percentage} plus --testing_percentage="
            f"{testing_percentage} leaves no images for training; make their sum less than 100.")


def split_images(image_files, labels, validation_percentage, testing_percentage):
    """Splits images by hash, then makes sure every class has an image in every used split.

    Args:
      image_files: [dataset.ImageFile].
      labels: class names; ImageFile.label_index indexes it.
      validation_percentage, testing_percentage: percent of each class to hold out.

    Returns:
      dict "training"/"validation"/"testing" -> [ImageFile], each sorted by relative path.

    Raises:
      UserError: a class has too few images to give each used split one.
    """
    needed = check_split_possible(image_files, labels, validation_percentage, testing_percentage)
    splits = {name: [] for name in SPLITS}
    for label_index, class_images in sorted(_images_by_class(image_files).items()):
        class_splits = _split_class(class_images, labels[label_index], needed,
                                    validation_percentage, testing_percentage)
        for name in SPLITS:
            splits[name].extend(class_splits[name])
    for name in SPLITS:
        splits[name].sort(key=lambda image: image.relative_path)
    return splits


def check_split_possible(image_files, labels, validation_percentage, testing_percentage):
    """Raises UserError unless every class can give each used split an image.

    Cheap (no decoding, no logging), so a run can check before it writes anything.

    Returns:
      The names of the splits in use, "training" first.
    """
    check_percentages(validation_percentage, testing_percentage)
    needed = ["training"]
    needed += ["validation"] if validation_percentage > 0 else []
    needed += ["testing"] if testing_percentage > 0 else []
    for label_index, class_images in sorted(_images_by_class(image_files).items()):
        groups = _group_near_duplicates(class_images)
        if len(groups) < len(needed):
            raise UserError(
                f"Class {labels[label_index]!r} has {len(class_images)} usable image(s) in "
                f"{len(groups)} distinct group(s), too few to give each of {', '.join(needed)} "
                "one; add images to its folder, or set --validation_percentage=0 and/or "
                "--testing_percentage=0.")
    return needed


def _images_by_class(image_files):
    by_class = collections.defaultdict(list)
    for image in image_files:
        by_class[image.label_index].append(image)
    return by_class


def _split_class(class_images, label, needed, validation_percentage, testing_percentage):
    groups = _group_near_duplicates(class_images)
    splits = {name: [] for name in SPLITS}
    for hash_name, group in groups.items():
        splits[split_name(hash_name, validation_percentage, testing_percentage)].append(hash_name)
    for name in needed:
        if not splits[name]:
            _borrow_group(splits, name, label)
    return {name: [image for hash_name in splits[name] for image in groups[hash_name]]
            for name in SPLITS}


def _group_near_duplicates(class_images):
    """Maps each hash name (path without its _nohash_ suffix) to its images."""
    groups = collections.defaultdict(list)
    for image in class_images:
        groups[re.sub(r"_nohash_.*$", "", image.relative_path)].append(image)
    return groups


def _borrow_group(splits, empty_split, label):
    """Moves one group into an empty split, deterministically, from the largest other split."""
    donor = max((name for name in SPLITS if name != empty_split),
                key=lambda name: (len(splits[name]), name == "training"))
    # The donor's group whose hash lies closest to the empty split's range is moved, so the
    # choice depends only on the file names.
    moved = min(splits[donor], key=split_percentage)
    splits[donor].remove(moved)
    splits[empty_split].append(moved)
    logging.warning(
        "Class %r has no image whose hash falls in the %s split; moved %r there from %s. "
        "(Add images to the class for a split that stays stable as images are added.)",
        label, empty_split, moved, donor)
