"""Finding classes and images: folder names as labels, content sniffing, user errors."""

import os

import pytest
from PIL import Image

from retrain.data import dataset
from retrain.errors import UserError
from tests.conftest import write_solid_colour_images


def test_labels_are_folder_names_exactly_and_sorted(tmp_path):
    colours = {"Sea_Shore-2": (0, 0, 200), "apple pie": (200, 0, 0), "Été": (0, 200, 0)}
    folder = write_solid_colour_images(tmp_path / "photos", colours=colours, per_class=3)
    collection = dataset.find_images(folder)
    assert collection.labels == sorted(colours)
    assert len(collection.images) == 9


def test_images_are_found_recursively_and_by_content(tmp_path):
    folder = tmp_path / "photos"
    write_solid_colour_images(folder, per_class=3)
    nested = folder / "red" / "more" / "deeper"
    nested.mkdir(parents=True)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(nested / "no_extension", format="PNG")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(nested / "png_named.jpg", format="PNG")
    (nested / "notes.jpg").write_text("not an image")
    (folder / "red" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "red" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    collection = dataset.find_images(str(folder))
    found = {image.relative_path for image in collection.images}
    assert {"red/more/deeper/no_extension", "red/more/deeper/png_named.jpg"} <= found
    skipped = {os.path.basename(skip.path): skip.reason for skip in collection.skipped}
    assert skipped["notes.jpg"].startswith("not a JPEG")
    assert set(skipped) == {"notes.jpg", ".DS_Store", "Thumbs.db"}


def test_content_key_follows_content_not_name(tmp_path):
    folder = write_solid_colour_images(tmp_path / "photos", per_class=2)
    red = os.path.join(folder, "red")
    os.rename(os.path.join(red, "red_000.jpg"), os.path.join(red, "renamed.jpg"))
    keys = {image.relative_path: image.content_key for image in dataset.find_images(folder).images}
    assert len(keys["red/renamed.jpg"]) == 20
    assert keys["red/renamed.jpg"] != keys["red/red_001.png"]


@pytest.mark.parametrize("layout, message", [
    ("missing", r"--image_dir '.*missing' does not exist"),
    ("empty", r"No valid folders of images found at"),
    ("one_class", r"Only one valid folder of images found at .*'red'"),
    ("empty_class", r"Class folder '.*empty' has no usable images"),
])
def test_bad_image_dirs_are_user_errors(tmp_path, layout, message):
    folder = tmp_path / layout
    if layout != "missing":
        folder.mkdir()
    if layout == "one_class":
        write_solid_colour_images(folder, colours={"red": (255, 0, 0)}, per_class=3)
    if layout == "empty_class":
        write_solid_colour_images(folder, per_class=3)
        (folder / "empty").mkdir()
        (folder / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match=message):
        dataset.find_images(str(folder))


def test_image_dir_flag_missing():
    with pytest.raises(UserError, match="Must set flag --image_dir"):
        dataset.find_images("")


def test_training_and_evaluate_walk_the_same_files(tmp_path):
    """One walker: label_image --evaluate on the training folder scores the images training
    saw, symlinked classes and subfolders included, hidden and system files left out."""
    from PIL import Image  # pylint: disable=import-outside-toplevel
    from retrain.evaluation import folder  # pylint: disable=import-outside-toplevel

    def write_pngs(directory, count):
        directory.mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(directory / f"{index}.png")

    write_pngs(tmp_path / "elsewhere" / "b", 3)
    write_pngs(tmp_path / "elsewhere" / "more_a", 2)
    write_pngs(tmp_path / "photos" / "a", 2)
    (tmp_path / "photos" / "b").symlink_to(tmp_path / "elsewhere" / "b")
    (tmp_path / "photos" / "a" / "linked").symlink_to(tmp_path / "elsewhere" / "more_a")
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "a" / ".hidden.png")
    (tmp_path / "photos" / "a" / "Thumbs.db").write_bytes(b"\0" * 16)
    training = sorted(image.path for image in dataset.find_images(str(tmp_path / "photos")).images)
    labelled, _ = folder.find_labelled_files(str(tmp_path / "photos"), ["a", "b"])
    assert sorted(path for path, _ in labelled) == training
    assert len(training) == 7
