"""Finding the images and naming the classes.

Each immediate subfolder of the image folder is a class named exactly as the folder is;
its images are found recursively. Files are recognised as images by their first bytes.
"""

import concurrent.futures
import dataclasses
import hashlib
import os

from absl import logging

from retrain.data import images
from retrain.errors import UserError

# Files that image folders collect from file managers and are never images.
_SYSTEM_FILE_NAMES = frozenset({"thumbs.db", "desktop.ini", "icon\r"})

# Hashing reads whole files; a few threads keep the disk busy while another thread hashes.
_HASHING_THREADS = 8


@dataclasses.dataclass(frozen=True)
class ImageFile:
    """One image found in the image folder."""

    path: str  # As found under image_dir (for reading and messages).
    relative_path: str  # "label/sub/name.jpg" with "/" separators: what the split hashes.
    label_index: int
    content_key: bytes  # SHA-1 of the file's bytes: what the bottleneck cache is keyed by.


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclasses.dataclass
class ImageCollection:
    """Everything found under image_dir. labels[i] is class i; the labels file lists them in order."""

    image_dir: str
    labels: list
    images: list  # [ImageFile]
    skipped: list  # [SkippedFile]


def display_path(path):
    """Path as printable text even when the file name is not valid UTF-8."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def find_images(image_dir):
    """Finds the classes and their image files under image_dir.

    Raises:
      UserError: image_dir is missing or unreadable, or holds fewer than two classes with images.
    """
    class_dirs = _list_class_dirs(image_dir)
    labels = [name for name, _ in class_dirs]
    candidates, skipped = [], []
    for label_index, (label, class_dir) in enumerate(class_dirs):
        paths, class_skipped = walk_files(class_dir)
        skipped.extend(class_skipped)
        candidates.extend((path, label_index) for path in paths)
    image_files, unrecognised = _identify_images(image_dir, candidates)
    skipped.extend(unrecognised)
    for skip in skipped:
        logging.warning("Skipping %s: %s", display_path(skip.path), skip.reason)
    collection = ImageCollection(image_dir, labels, image_files, skipped)
    check_every_class_has_images(collection)
    return collection


def check_every_class_has_images(collection):
    """Raises UserError naming a class folder that has no usable image."""
    counts = [0] * len(collection.labels)
    for image in collection.images:
        counts[image.label_index] += 1
    for label, count in zip(collection.labels, counts):
        if count == 0:
            folder = os.path.join(collection.image_dir, label)
            raise UserError(
                f"Class folder {display_path(folder)!r} has no usable images (JPEG, PNG, GIF, "
                "BMP or WebP); add images to it or remove the folder.")


def _list_class_dirs(image_dir):
    if not image_dir:
        raise UserError("Must set flag --image_dir (a folder with one subfolder of images per label).")
    if not os.path.isdir(image_dir):
        raise UserError(f"--image_dir {display_path(image_dir)!r} does not exist or is not a folder; "
                        "pass the folder that holds one subfolder of images per label.")
    try:
        entries = sorted(os.scandir(image_dir), key=lambda entry: entry.name)
    except OSError as error:
        raise UserError(f"Cannot read --image_dir {display_path(image_dir)!r} ({error.strerror}); "
                        "check its permissions.") from error
    class_dirs = [(entry.name, entry.path) for entry in entries
                  if not entry.name.startswith(".") and _is_dir(entry)]
    if not class_dirs:
        raise UserError(f"No valid folders of images found at {display_path(image_dir)!r}: put each "
                        "label's images in a subfolder named after the label.")
    for name, _ in class_dirs:
        if "\n" in name or "\r" in name:
            raise UserError(f"Class folder name {display_path(name)!r} has a line break, which the "
                            "labels file (one label per line) cannot hold; rename the folder.")
    if len(class_dirs) == 1:
        raise UserError(f"Only one valid folder of images found at {display_path(image_dir)!r} "
                        f"({display_path(class_dirs[0][0])!r}) - multiple classes are needed for "
                        "classification; add a subfolder per label.")
    return class_dirs


def _is_dir(entry):
    try:
        return entry.is_dir()  # Follows symlinks.
    except OSError:
        return False


def list_files(folder):
    """The files under folder that retrain would consider, by retrain's rules (walk_files);
    what it leaves out is logged as a warning, as in training."""
    paths, skipped = walk_files(folder)
    for skip in skipped:
        logging.warning("Skipping %s: %s", display_path(skip.path), skip.reason)
    return paths


def walk_files(class_dir):
    """Lists the files under class_dir recursively, following symlinks but not loops.

    Returns:
      (sorted list of file paths, list of SkippedFile for hidden and system files).
    """
    files, skipped = [], []
    visited_dirs = set()

    def skip_unreadable_dir(error):
        # Without this, os.walk leaves out a folder it cannot list without a word.
        skipped.append(SkippedFile(error.filename, f"cannot read folder: {error.strerror or error}"))

    for root, dir_names, file_names in os.walk(class_dir, onerror=skip_unreadable_dir,
                                               followlinks=True):
        stat = os.stat(root)
        if (stat.st_dev, stat.st_ino) in visited_dirs:
            dir_names[:] = []  # A symlink loop: this folder was walked already.
            continue
        visited_dirs.add((stat.st_dev, stat.st_ino))
        dir_names[:] = sorted(name for name in dir_names if not name.startswith("."))
        for name in sorted(file_names):
            path = os.path.join(root, name)
            if name.startswith(".") or name.lower() in _SYSTEM_FILE_NAMES:
                skipped.append(SkippedFile(path, "hidden or system file"))
            else:
                files.append(path)
    return files, skipped


def _identify_images(image_dir, candidates):
    """Reads each candidate once: recognises its format and hashes its content."""
    # One task per thread, each a slice of the files: a task per file costs more in thread
    # hand-offs than hashing a small image does.
    slices = [candidates[start::_HASHING_THREADS] for start in range(_HASHING_THREADS)]
    with concurrent.futures.ThreadPoolExecutor(_HASHING_THREADS) as pool:
        sliced = list(pool.map(lambda part: [_fingerprint(path) for path, _ in part], slices))
    results = [None] * len(candidates)
    for start, part in enumerate(sliced):
        results[start::_HASHING_THREADS] = part
    image_files, skipped = [], []
    for (path, label_index), (content_key, reason) in zip(candidates, results):
        if reason:
            skipped.append(SkippedFile(path, reason))
            continue
        relative_path = os.path.relpath(path, image_dir).replace(os.sep, "/")
        image_files.append(ImageFile(path, relative_path, label_index, content_key))
    return image_files, skipped


def _fingerprint(path):
    """Returns (SHA-1 digest, None) for an image file, or (None, reason) for anything else."""
    try:
        with open(path, "rb") as image_file:
            header = image_file.read(images.SNIFF_BYTES)
            if images.sniff_format(header) is None:
                return None, "not a JPEG, PNG, GIF, BMP or WebP image" if header else "empty file"
            digest = hashlib.sha1(header)
            for chunk in iter(lambda: image_file.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:
        return None, f"cannot read: {error.strerror or error}"
    return digest.digest(), None
