"""The data audit: planted label errors, duplicates, leaks and outliers are found; tiny sets
are handled; --exclude_flagged leaves flagged images out of training."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from retrain.audit import audit
from retrain.audit import duplicates
from retrain.audit import label_issues
from retrain.audit import outliers
from retrain.audit import similarity
from retrain.data import dataset

pytestmark = pytest.mark.timeout(120)


def _clusters(per_class=40, classes=4, dim=32, seed=0):
    """float32 features [per_class * classes, dim] in well separated clusters, and labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    features = centers[labels] + rng.normal(0, 1, (len(labels), dim))
    return features.astype(np.float32), labels


def test_planted_label_errors_come_first():
    features, labels = _clusters()
    given = labels.copy()
    planted = [3, 50, 97, 130]
    for row in planted:
        given[row] = (labels[row] + 1) % 4
    issues = label_issues.find_label_issues(features, given, 4)
    assert sorted(issues.rows[:4].tolist()) == planted
    assert issues.folds == label_issues.FOLDS
    assert issues.confident[:4].all()
    # The suggested label is the true one, and scores fall from the top.
    assert (issues.suggested[:4] == labels[issues.rows[:4]]).all()
    assert np.all(np.diff(issues.scores) <= 0)


def test_tiny_classes_reduce_or_skip_folds():
    features, labels = _clusters(per_class=3, classes=2)
    assert label_issues.find_label_issues(features, labels, 2).folds == 3
    one_image_class = np.array([0, 0, 0, 1])
    skipped = label_issues.find_label_issues(features[:4], one_image_class, 2)
    assert skipped.folds == 0 and len(skipped.rows) == 0


def test_outlier_is_found_in_its_class():
    features, labels = _clusters(per_class=30, classes=2)
    features[5] = features[40] * 3  # far from its own class
    keys = [bytes([row]) for row in range(len(labels))]
    found = outliers.find_outliers(features, labels, keys)
    assert found.rows[0] == 5


def _image_set(folder, classes=("cat", "dog"), per_class=12, seed=0):
    """PNG pictures of random blocks, distinct per image; returns the folder."""
    rng = np.random.default_rng(seed)
    for label in classes:
        os.makedirs(folder / label, exist_ok=True)
        for index in range(per_class):
            blocks = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            picture = Image.fromarray(blocks).resize((48, 48), Image.NEAREST)
            picture.save(folder / label / f"{label}_{index:02d}.png")
    return folder


def test_exact_and_near_duplicates_with_leak_and_conflict(tmp_path):
    folder = _image_set(tmp_path / "images")
    shutil.copyfile(folder / "cat/cat_00.png", folder / "dog/copy_of_cat.png")
    Image.open(folder / "cat/cat_01.png").save(folder / "cat/cat_01_again.jpg", quality=90)
    collection = dataset.find_images(str(folder))
    rows = {image.relative_path: row for row, image in enumerate(collection.images)}
    # Stand-in bottlenecks: the pictures' own thumbnails (as good as a module for copies).
    features = np.stack([duplicates.pixel_signature(image.path) for image in collection.images])
    split_of = {path: "training" for path in rows}
    split_of["cat/cat_00.png"] = "testing"
    result = audit.audit_images(collection.images, features, collection.labels, split_of,
                                str(folder))
    groups = {(group["kind"], tuple(group["paths"])) for group in result.duplicates}
    assert ("exact", ("cat/cat_00.png", "dog/copy_of_cat.png")) in groups
    assert ("near", ("cat/cat_01.png", "cat/cat_01_again.jpg")) in groups
    assert result.counts["exact_groups"] == 1 and result.counts["near_groups"] == 1
    assert result.counts["leaks"] == 1 and result.counts["label_conflicts"] == 1
    # The leak's training copy is what --exclude_flagged leaves out, not its test copy.
    # (Random pictures have no learnable labels: leave the other lists out of it here.)
    result.label_issues, result.outliers = [], []
    flagged = result.flagged_training_paths()
    assert "dog/copy_of_cat.png" in flagged and "cat/cat_00.png" not in flagged


def test_write_audit_files(tmp_path):
    folder = _image_set(tmp_path / "images", per_class=6)
    collection = dataset.find_images(str(folder))
    features = np.stack([duplicates.pixel_signature(image.path) for image in collection.images])
    result = audit.audit_images(collection.images, features, collection.labels, {}, str(folder))
    path = audit.write_audit(result, str(tmp_path / "out"))
    written = json.loads(open(path, encoding="utf-8").read())
    assert set(written) >= {"label_issues", "duplicates", "outliers", "counts", "thresholds",
                            "seconds"}
    assert written["counts"]["images"] == 12
    page = (tmp_path / "out" / audit.AUDIT_PAGE).read_text()
    assert "Possible label errors" in page and "Duplicates" in page


def _pair_features(pairs, neighbours=5, dim=16, seed=0):
    """float32 [2 * pairs + pairs * neighbours, dim]: rows 2k, 2k + 1 are each other's nearest
    neighbours, but only about twice as close as their 5 neighbours (rows after 2 * pairs):
    the relative rule alone (distance ratio <= DISTANCE_RATIO) does not join them."""
    rng = np.random.default_rng(seed)
    rows, extra = [], []
    for _ in range(pairs):
        center = rng.normal(0, 10, dim)
        step = rng.normal(0, 1, dim)
        step *= 0.5 / np.linalg.norm(step)
        rows += [center + step, center - step]
        for _ in range(neighbours):
            offset = rng.normal(0, 1, dim)
            extra.append(center + offset * 1.3 / np.linalg.norm(offset))
    return np.array(rows + extra, np.float32)


def test_resized_copy_is_grouped_and_look_alike_is_not(tmp_path):
    """A 28-pixel picture saved 1.5x larger, and a different picture of the same layout (same
    blocks, other fine detail): both pairs are mutual nearest bottleneck neighbours that do not
    stand out (ratio above DISTANCE_RATIO) and whose 16x16 thumbnails correlate below
    SAME_PIXELS; compared at 28x28, only the copy matches."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (7, 7), dtype=np.uint8)
    original = Image.fromarray(blocks).resize((28, 28), Image.NEAREST)
    original.save(tmp_path / "a.png")
    original.resize((42, 42), Image.BILINEAR).save(tmp_path / "a_resized.png")
    other = Image.fromarray(rng.integers(0, 256, (7, 7), dtype=np.uint8)).resize((28, 28),
                                                                                  Image.NEAREST)
    other.save(tmp_path / "b.png")
    detail = np.asarray(other, np.float32) + rng.normal(0, 30, (28, 28))
    Image.fromarray(np.clip(detail, 0, 255).astype(np.uint8)).save(tmp_path / "b_look_alike.png")
    features = _pair_features(2)
    paths = [str(tmp_path / name) for name in ("a.png", "a_resized.png", "b.png",
                                                "b_look_alike.png")]
    for row in range(len(features) - 4):  # the neighbours: distinct random pictures
        noise = Image.fromarray(rng.integers(0, 256, (7, 7), dtype=np.uint8))
        noise.resize((28, 28), Image.NEAREST).save(tmp_path / f"n{row}.png")
        paths.append(str(tmp_path / f"n{row}.png"))
    # The preconditions that make this a test of the matched-resolution rule.
    unit = similarity.unit_rows(features)
    ratios = {(a, b): ratio for a, b, ratio in duplicates.mutual_neighbours(unit)}
    assert ratios[(0, 1)] > duplicates.DISTANCE_RATIO and ratios[(2, 3)] > duplicates.DISTANCE_RATIO
    signatures = np.stack([duplicates.pixel_signature(path) for path in paths[:4]])
    for a, b in ((0, 1), (2, 3)):
        correlation = signatures[a] @ signatures[b]
        assert duplicates.THUMBNAIL_FOR_MATCHED <= correlation < duplicates.SAME_PIXELS
    assert duplicates.matched(paths[0], paths[1]) >= duplicates.MATCHED_CORRELATION
    assert duplicates.matched(paths[2], paths[3]) < duplicates.MATCHED_CORRELATION
    groups = duplicates.find_duplicates([path.encode() for path in paths], features, paths)
    assert [(group.kind, group.rows) for group in groups] == [("near", [0, 1])]
