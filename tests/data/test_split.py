"""The stable split: retrain.py's hash rule on paths relative to the image folder."""

import pytest

from retrain.data import dataset
from retrain.data import split
from retrain.errors import UserError
from tests.conftest import write_solid_colour_images


def _split_of(collection, percentages=(10, 10)):
    splits = split.split_images(collection.images, collection.labels, *percentages)
    return {image.relative_path: name for name in split.SPLITS for image in splits[name]}


def test_split_is_identical_for_two_mount_points(tmp_path):
    first = dataset.find_images(write_solid_colour_images(tmp_path / "mnt" / "photos", per_class=30))
    second = dataset.find_images(write_solid_colour_images(tmp_path / "data" / "images", per_class=30))
    assert _split_of(first) == _split_of(second)
    assert set(_split_of(first).values()) == set(split.SPLITS)


def test_split_does_not_change_when_images_are_added(tmp_path):
    folder = write_solid_colour_images(tmp_path / "photos", per_class=40)
    before = _split_of(dataset.find_images(folder))
    write_solid_colour_images(tmp_path / "photos", per_class=80, seed=1)  # adds _040.._079
    after = _split_of(dataset.find_images(folder))
    assert len(after) == 2 * len(before)
    assert {path: after[path] for path in before} == before


def test_split_matches_retrain_py_rule():
    # retrain.py: sha1 of the name without the _nohash_ suffix, mod 2**27, scaled to percent.
    assert split.split_percentage("daisy/a_nohash_1.jpg") == split.split_percentage("daisy/a_nohash_2.jpg")
    names = [f"class/image_{index}.jpg" for index in range(2000)]
    shares = [split.split_name(name, 10, 10) for name in names]
    assert 150 < shares.count("validation") < 250
    assert 150 < shares.count("testing") < 250


def test_nohash_groups_stay_together(tmp_path):
    folder = tmp_path / "photos"
    write_solid_colour_images(folder, per_class=10)
    for index in range(6):
        (folder / "red" / f"leaf7_nohash_{index}.png").write_bytes(
            (folder / "red" / "red_001.png").read_bytes())
    result = _split_of(dataset.find_images(str(folder)))
    assert len({result[f"red/leaf7_nohash_{index}.png"] for index in range(6)}) == 1


def test_small_class_borrows_deterministically(tmp_path, caplog):
    folder = write_solid_colour_images(tmp_path / "photos", per_class=3)
    collection = dataset.find_images(folder)
    first = _split_of(collection)
    assert first == _split_of(collection)
    for label in collection.labels:
        assert sorted(name for path, name in first.items() if path.startswith(label + "/")) == [
            "testing", "training", "validation"]


def test_class_too_small_for_split_is_a_user_error(tmp_path):
    folder = write_solid_colour_images(tmp_path / "photos", per_class=2)
    collection = dataset.find_images(folder)
    with pytest.raises(UserError, match=r"Class 'blue' has 2 usable image.*--validation_percentage=0"):
        split.split_images(collection.images, collection.labels, 10, 10)
    # Without a test split, two images per class are enough.
    splits = split.split_images(collection.images, collection.labels, 10, 0)
    assert not splits["testing"] and len(splits["validation"]) == 3


@pytest.mark.parametrize("validation, testing, message", [
    (-1, 10, r"--validation_percentage=-1 is out of range"),
    (10, 100, r"--testing_percentage=100 is out of range"),
    (60, 40, r"leaves no images for training"),
])
def test_bad_percentages(validation, testing, message):
    with pytest.raises(UserError, match=message):
        split.check_percentages(validation, testing)
