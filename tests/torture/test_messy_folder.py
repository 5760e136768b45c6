"""Torture: a real-world messy image folder. Every bad file is skipped, named and counted."""

import json
import os

from PIL import Image

from conftest import fast_config
from retrain import pipeline
from retrain.data import dataset
import torture_images as make

# Not valid UTF-8 (Latin-1 "café"): such names come from old cameras and Windows shares.
NON_UTF8_NAME = os.fsdecode(b"caf\xe9 photo.jpg")
NON_UTF8_FOLDER = os.fsdecode(b"d\xe9j\xe0 vu")


def good_jpeg(colour, seed):
    return make.encode(Image.blend(make.noisy(seed=seed), make.solid(colour), 0.85), "JPEG")


def build_messy_folder(root):
    """Two classes of usable images mixed with every kind of debris.

    Returns:
      (image_dir, {file name: expected skip reason fragment}).
    """
    image_dir = os.path.join(root, "photos")
    outside = make.write_bytes(os.path.join(root, "elsewhere", "linked.jpg"), good_jpeg(make.RED, 99))
    for label, colour in (("red", make.RED), ("blue sky", make.BLUE)):
        for index in range(8):
            make.write_bytes(os.path.join(image_dir, label, f"plain {index}.jpg"),
                             good_jpeg(colour, index))
    red = os.path.join(image_dir, "red")
    make.write_bytes(os.path.join(red, "ünïcödé ☃.jpg"), good_jpeg(make.RED, 50))
    make.write_bytes(os.path.join(red, NON_UTF8_NAME), good_jpeg(make.RED, 51))
    # (A shade apart from "png named.jpg": identical bytes would share one cached vector.)
    make.write_bytes(os.path.join(red, NON_UTF8_FOLDER, "inside.png"),
                     make.encode(make.solid((200, 40, 40)), "PNG"))
    make.write_bytes(os.path.join(red, "png named.jpg"), make.encode(make.solid(make.RED), "PNG"))
    make.write_bytes(os.path.join(red, "tiny.png"), make.encode(make.solid(make.RED, (1, 1)), "PNG"))
    make.write_bytes(os.path.join(red, "anim.gif"), make.animated_gif())
    make.write_bytes(os.path.join(red, "rotated.jpg"), make.exif_rotated_jpeg())
    os.symlink(outside, os.path.join(red, "link to outside.jpg"))
    os.symlink(".", os.path.join(red, "loop"))  # A folder symlink loop.
    os.symlink(os.path.join(red, "self.jpg"), os.path.join(red, "self.jpg"))  # A file loop.
    os.symlink(os.path.join(root, "nowhere.jpg"), os.path.join(red, "dangling.jpg"))
    blue = os.path.join(image_dir, "blue sky")
    bad = {
        "truncated.jpg": make.truncated_jpeg(),
        "empty.jpg": b"",
        "notes.jpg": b"not a photo\n",
        "Thumbs.db": b"\xd0\xcf\x11\xe0 thumbnail cache",
        ".DS_Store": b"\0\0\0\1Bud1",
        "._blue 0.jpg": b"\0\5\26\7 AppleDouble",
        "bomb.png": make.png_bomb(11_000, 10_000),
    }
    for name, data in bad.items():
        make.write_bytes(os.path.join(blue, name), data)
    # A hidden folder's images are not used (and its files are not listed as skipped).
    make.write_bytes(os.path.join(blue, ".thumbnails", "t.jpg"), good_jpeg(make.BLUE, 7))
    expected = {
        "truncated.jpg": "cannot decode", "empty.jpg": "empty file",
        "notes.jpg": "not a JPEG", "Thumbs.db": "system file", ".DS_Store": "hidden",
        "._blue 0.jpg": "hidden", "bomb.png": "more than the limit",
        "self.jpg": "cannot read", "dangling.jpg": "cannot read",
    }
    return image_dir, expected


def test_find_images_lists_every_usable_file_and_names_the_rest(tmp_path):
    image_dir, expected = build_messy_folder(str(tmp_path))
    collection = dataset.find_images(image_dir)
    assert collection.labels == ["blue sky", "red"]
    found = sorted(image.relative_path for image in collection.images)
    assert "red/" + NON_UTF8_NAME in found
    assert f"red/{NON_UTF8_FOLDER}/inside.png" in found
    assert "red/link to outside.jpg" in found
    assert not any("/loop/" in path for path in found), "followed a symlink loop"
    # bomb.png and truncated.jpg start like images; only decoding rejects them.
    skipped = {os.path.basename(skip.path): skip.reason for skip in collection.skipped}
    assert set(skipped) == set(expected) - {"bomb.png", "truncated.jpg"}
    for name, reason in skipped.items():
        assert expected[name] in reason, (name, reason)


def test_run_on_a_messy_folder_finishes_and_reports_each_skip(tmp_path, tiny_module):
    image_dir, expected = build_messy_folder(str(tmp_path))
    output_dir = tmp_path / "out"
    result = pipeline.run(fast_config(image_dir, tiny_module, output_dir, testing_percentage=0,
                                      validation_percentage=0, how_many_training_steps=20))
    skipped = {os.path.basename(skip.path): skip.reason for skip in result.skipped}
    assert set(skipped) == set(expected)
    for name, reason in skipped.items():
        assert expected[name] in reason, (name, reason)
    assert (output_dir / "saved_model" / "1" / "saved_model.pb").exists()
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    reported = {os.path.basename(entry["path"]) for entry in metrics["skipped_images"]}
    # The report shows undecodable bytes escaped, never as a crash.
    assert reported == set(expected)
    # 8 + 8 plain, plus unicode, non-UTF-8 name and folder, png-named-jpg, tiny, gif, rotated, link.
    assert result.bottlenecks_computed == 16 + 8


def test_image_dir_with_spaces_unicode_and_non_utf8_bytes_works(tmp_path, tiny_module):
    image_dir = os.path.join(str(tmp_path), "my photos ☃", NON_UTF8_FOLDER)
    for label, colour in (("a", make.RED), ("b", make.BLUE)):
        for index in range(3):
            make.write_bytes(os.path.join(image_dir, label, f"{index}.jpg"), good_jpeg(colour, index))
    result = pipeline.run(fast_config(image_dir, tiny_module, tmp_path / "out ☃",
                                      testing_percentage=0, validation_percentage=0,
                                      how_many_training_steps=5))
    assert result.labels == ["a", "b"] and not result.skipped
