"""The report files: PNGs that open, an HTML page that parses, and labels that stay text."""

import html.parser
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from retrain import pipeline
from retrain.errors import UserError
from retrain.evaluation import metrics
from retrain.evaluation import report
from tests.conftest import fast_config, write_solid_colour_images

# Folder names are data: these must show up as text, never as markup or maths.
HOSTILE_LABELS = ["<script>alert(1)<\\script>", "a\" onerror=\"alert(2)", "$x^2$ & co"]


# Class folders named like markup, and one like an already-escaped entity.
HOSTILE_COLOURS = {"<script>": (220, 30, 30), "<img src=x onerror=alert(1)>": (30, 200, 40),
                   "x&amp;y": (30, 40, 220)}


class _PageParser(html.parser.HTMLParser):
    """Collects the tags, attributes and text of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.attributes, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.extend(attrs)

    def handle_data(self, data):
        self.text.append(data)


def _parse(page):
    parser = _PageParser()
    parser.feed(page)
    parser.close()
    return parser


def _metrics_dict(labels):
    probabilities = np.eye(3)[[0, 0, 1, 2, 2, 1]] * 0.9 + 0.05
    result = metrics.classification_metrics([0, 0, 1, 1, 2, 2], probabilities, labels)
    data = result.as_dict()
    data.update({
        "module": "tiny <module>",
        "misclassified": [{"image": f"{labels[1]}/x.jpg", "true": labels[1], "predicted": labels[2],
                           "score": 0.9}],
        "skipped_images": [{"path": f"{labels[0]}/bad.jpg", "reason": "cannot decode <b>"}],
        "skipped_image_count": 1,
        "stage_seconds": {"training": 1.25},
        "history": {"steps": [0, 10, 19], "train_accuracy": [0.3, 0.8, 1.0],
                    "cross_entropy": [1.1, 0.5, 0.2], "validation_accuracy": [0.3, 0.7, 0.9],
                    "validation_cross_entropy": [1.1, 0.6, 0.3]},
    })
    return data


def test_write_report_writes_pngs_and_page(tmp_path):
    pictures = report.write_report(str(tmp_path), _metrics_dict(["cat", "dog", "fish"]))
    assert sorted(os.listdir(tmp_path)) == ["confusion_matrix.png", "report.html",
                                            "training_curves.png"]
    for name in ("confusion_matrix.png", "training_curves.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 300
        assert (tmp_path / name).read_bytes() == pictures[name]
    page = _parse((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert page.tags.count("img") == 2
    sources = [value for name, value in page.attributes if name == "src"]
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    text = " ".join(page.text)
    assert "66.7%" in text  # Top-1 accuracy: 4 of 6 right.
    assert "cat" in text and "fish" in text and "cannot decode <b>" in text


def test_hostile_labels_stay_text(tmp_path):
    report.write_report(str(tmp_path), _metrics_dict(HOSTILE_LABELS))
    page_text = (tmp_path / "report.html").read_text(encoding="utf-8")
    page = _parse(page_text)
    assert "script" not in page.tags
    # The only attributes are the page's own: no onerror or other handler got in.
    assert {name for name, _ in page.attributes} <= {"lang", "charset", "http-equiv", "content",
                                                    "name", "class", "src", "alt"}
    assert "<script>" not in page_text
    for label in HOSTILE_LABELS:
        assert label in " ".join(page.text)  # Unescaped by the parser, so shown as typed.
    assert sorted(os.listdir(tmp_path)) == ["confusion_matrix.png", "report.html",
                                            "training_curves.png"]


def test_plot_text_escapes_maths_and_shortens():
    assert report._plot_text("$x$") == r"\$x\$"  # pylint: disable=protected-access
    assert len(report._plot_text("a" * 100)) == 24  # pylint: disable=protected-access


def test_report_without_history_or_test_images(tmp_path):
    data = metrics.classification_metrics([], np.zeros([0, 2]), ["a", "b"]).as_dict()
    pictures = report.write_report(str(tmp_path), data)
    assert list(pictures) == ["confusion_matrix.png"]
    text = " ".join(_parse((tmp_path / "report.html").read_text(encoding="utf-8")).text)
    assert "Misclassified test images (0)" in text


def test_many_classes_render(tmp_path):
    labels = [f"class_{index}" for index in range(40)]
    rng = np.random.default_rng(0)
    result = metrics.classification_metrics(rng.integers(0, 40, 200), rng.random([200, 40]), labels)
    png = report.render_confusion_matrix(result.confusion, labels)
    with Image.open(io.BytesIO(png)) as image:
        assert image.width > 1000


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, tiny_module):
    """A run whose class folders are named like markup."""
    root = tmp_path_factory.mktemp("hostile")
    image_dir = write_solid_colour_images(root / "photos", colours=HOSTILE_COLOURS)
    output_dir = root / "out"
    result = pipeline.run(fast_config(image_dir, tiny_module, output_dir))
    return result, output_dir


def test_run_writes_metrics_report_and_tensorboard_image(hostile_run):
    result, output_dir = hostile_run
    assert sorted(os.listdir(output_dir)) == [
        "audit.html", "audit.json", "bottlenecks", "checkpoints", "confusion_matrix.png", "metrics.json", "output_labels.txt",
        "reliability.png", "report.html", "saved_model", "summaries", "training_curves.png",
        "training_log.txt"]
    data = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert data["confusion_matrix"]["labels"] == result.labels
    assert np.sum(data["confusion_matrix"]["matrix"]) == data["test_count"] == result.test.count
    assert [row["label"] for row in data["per_class"]] == result.labels
    assert sum(row["support"] for row in data["per_class"]) == result.test.count
    assert data["test_top5_accuracy"] == 1.0 and data["skipped_image_count"] == 0
    assert set(data["stage_seconds"]) >= {"bottlenecks", "training", "evaluation", "export"}
    assert 'href="audit.html"' in (output_dir / "report.html").read_text(encoding="utf-8")
    # Calibration and unknown (issue 25): the temperature and both ECEs, the threshold.
    assert data["calibration"]["temperature"] > 0 and len(data["calibration"]["reliability_after"]) == 15
    assert 0 <= data["calibration"]["ece_after"] <= 1 and data["unknown"]["known_share"] == 0.95
    assert len(data["history"]["validation_cross_entropy"]) == len(data["history"]["steps"])
    page = _parse((output_dir / "report.html").read_text(encoding="utf-8"))
    assert "script" not in page.tags and page.tags.count("img") == 3
    assert "<img src=x onerror=alert(1)>" in " ".join(page.text)
    assert "x&amp;y" in " ".join(page.text)  # Escaped once, shown as named.
    assert _tensorboard_image(output_dir / "summaries" / "test", "confusion_matrix") == (
        output_dir / "confusion_matrix.png").read_bytes()


def _tensorboard_image(folder, tag):
    """The PNG of the last image summary named tag in the event files of folder."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    found = None
    for name in sorted(os.listdir(folder)):
        for event in tf.compat.v1.train.summary_iterator(str(folder / name)):
            for value in event.summary.value:
                if value.tag == tag:
                    assert value.metadata.plugin_data.plugin_name == "images"
                    width, height, png = tf.make_ndarray(value.tensor)
                    with Image.open(io.BytesIO(png)) as image:
                        assert (int(width), int(height)) == image.size
                    found = png
    return found


def test_evaluate_a_labelled_folder_from_the_command_line(hostile_run, tmp_path):
    result, output_dir = hostile_run
    colours = {label: HOSTILE_COLOURS[label] for label in ("<script>", "x&amp;y")}
    new_images = write_solid_colour_images(tmp_path / "new", colours=colours, per_class=3, seed=7)
    (tmp_path / "new" / "<script>" / "notes.txt").write_text("not an image")
    completed = subprocess.run(
        [sys.executable, "-m", "retrain.cli.label_image_command", f"--saved_model_dir={output_dir}/saved_model",
         f"--image_dir={new_images}", "--evaluate", f"--report_dir={tmp_path / 'report'}"],
        capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == "Top-1 accuracy = 100.0%, top-5 accuracy = 100.0% (N=6)"
    assert "Images skipped as unreadable: 1" in lines and "notes.txt" in completed.stderr
    data = json.loads((tmp_path / "report" / "metrics.json").read_text(encoding="utf-8"))
    # Classes absent from the folder still get their row and column.
    assert data["confusion_matrix"]["labels"] == result.labels
    assert np.trace(data["confusion_matrix"]["matrix"]) == 6
    assert sorted(os.listdir(tmp_path / "report")) == ["confusion_matrix.png", "metrics.json",
                                                      "report.html"]


def test_evaluate_refuses_a_folder_that_is_not_a_label(hostile_run, tmp_path):
    from retrain.evaluation import folder  # pylint: disable=import-outside-toplevel
    result, _ = hostile_run
    for name in (result.labels[0], "zebra"):
        os.makedirs(tmp_path / name)
    with pytest.raises(UserError, match=r"Folder 'zebra' in --image_dir is not a label of the "
                                        r"model \(its labels: .*\); rename the folder"):
        folder.find_labelled_files(str(tmp_path), result.labels)


def test_evaluate_needs_subfolders(tmp_path):
    from retrain.evaluation import folder  # pylint: disable=import-outside-toplevel
    with pytest.raises(UserError, match=r"has no subfolders; to --evaluate, put each image"):
        folder.find_labelled_files(str(tmp_path), ["a", "b"])
