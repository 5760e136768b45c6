"""Torture: labels are data. Folder names round-trip exactly and never become paths or markup.

A folder name cannot contain "/", so "../x" itself cannot be a label (and names starting with
"." are hidden, not classes); the names below are the nearest things that can, plus markup,
format strings, quotes and undecodable bytes.
"""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from conftest import fast_config
from retrain import pipeline
from retrain.data import dataset
from retrain.errors import UserError
from retrain.features import bottleneck_cache
from retrain.predict import label_image
import processes
import torture_images as make

NASTY_LABELS = [
    "<script>alert(1)<\\script>",
    "<img src=x onerror=alert(1)>",
    "x..",
    "a\\..\\..\\windows",
    " padded ",
    "%s %n {0} $(rm -rf ~)",
    "\"quoted\" & 'apostrophe'",
    "ünïcödé ☃",
    os.fsdecode(b"latin1 caf\xe9"),  # Not valid UTF-8.
]


def write_classes(image_dir, labels):
    for index, label in enumerate(labels):
        for copy in range(2):
            colour = (index * 30 % 256, copy * 80, 255 - index * 30 % 256)
            make.write_bytes(os.path.join(image_dir, label, f"{copy}.png"),
                             make.encode(make.solid(colour), "PNG"))


def all_paths(folder):
    found = set()
    for root, dir_names, file_names in os.walk(folder):
        found.update(os.path.join(root, name) for name in dir_names + file_names)
    return found


def test_nasty_labels_round_trip_and_stay_inside_the_output_folder(tmp_path, tiny_module):
    image_dir = str(tmp_path / "photos")
    write_classes(image_dir, NASTY_LABELS)
    before = all_paths(tmp_path)
    output_dir = tmp_path / "out"
    result = pipeline.run(fast_config(image_dir, tiny_module, output_dir, testing_percentage=0,
                                      validation_percentage=0, how_many_training_steps=5))
    labels = sorted(NASTY_LABELS)
    assert result.labels == labels
    # Nothing appeared outside the output folder.
    assert {path for path in all_paths(tmp_path) - before
            if os.path.commonpath([path, str(output_dir)]) != str(output_dir)} == set()
    # The labels file: one label per line, byte for byte.
    assert (output_dir / "output_labels.txt").read_bytes() == b"".join(
        os.fsencode(label) + b"\n" for label in labels)
    assert json.loads((output_dir / "metrics.json").read_bytes())["labels"] == labels
    # The SavedModel.
    assert label_image.load_classifier(str(output_dir / "saved_model")).labels == labels
    # label_image's JSON output, through the command line.
    image = make.write_bytes(str(tmp_path / "query.png"), make.encode(make.solid(make.RED), "PNG"))
    completed = subprocess.run(
        [sys.executable, "-m", "retrain.cli.label_image_command", f"--saved_model_dir={output_dir / 'saved_model'}",
         f"--image={image}", "--output_format=json", f"--num_top_predictions={len(labels)}"],
        capture_output=True, env=processes.cli_environment(), timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")[-2000:]
    record = json.loads(completed.stdout.decode("utf-8"))  # Valid UTF-8 JSON, one line.
    assert sorted(record["labels"]) == labels


@pytest.mark.parametrize("name", ["line\nbreak", "carriage\rreturn"])
def test_label_with_a_line_break_is_refused(tmp_path, name):
    # The labels file holds one label per line: a line break would shift every index after it.
    write_classes(str(tmp_path / "photos"), [name, "other"])
    with pytest.raises(UserError, match="line break.*rename the folder"):
        dataset.find_images(str(tmp_path / "photos"))


def test_module_handle_cannot_steer_the_cache_outside_its_folder(tmp_path):
    module = dataclasses.make_dataclass("Module", ["handle", "identity", "image_size"])(
        handle="../../../etc/x", identity="x", image_size=(32, 32))
    folder = bottleneck_cache.module_cache_dir(str(tmp_path / "cache"), module)
    assert os.path.dirname(folder) == str(tmp_path / "cache")
