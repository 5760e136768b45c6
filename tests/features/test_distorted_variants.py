"""Augmentation end to end on the tiny module: cached variants for training images only."""

import dataclasses
import json
import os

import numpy as np
import pytest

from retrain import pipeline
from retrain.compare import compare
from retrain.config import DEFAULT_AUGMENTATION_COPIES
from retrain.data import dataset
from retrain.data.distortion_settings import Distortions
from retrain.errors import UserError
from retrain.evaluation import evaluate
from retrain.features import bottlenecks
from retrain.features import distorted_variants
from retrain.features import modules
from retrain.training import train
from tests.conftest import fast_config, parse_retrain_flags

DISTORTIONS = Distortions(random_crop=20, random_scale=10, random_brightness=20)
DISTORTION_SETTINGS = {"random_crop": 20, "random_scale": 10, "random_brightness": 20}


def _variants(image_files, module, cache_dir, distortions=DISTORTIONS, copies=3):
    """(training arrays with variants appended, AugmentationResult) for image_files."""
    originals = bottlenecks.get_bottlenecks(image_files, module, cache_dir, 8, 10**8)
    training = (originals.features, np.array([image.label_index for image in image_files],
                                             np.int32), originals.image_files)
    return distorted_variants.add_training_variants(training, module, cache_dir, 8, 10**8, distortions,
                                              copies)


@pytest.fixture(scope="module")
def library_run(tmp_path_factory, tiny_module, colour_images):
    cache_dir = tmp_path_factory.mktemp("cache")
    module = modules.resolve_module(tiny_module)
    image_files = dataset.find_images(colour_images).images[:6]
    training, result = _variants(image_files, module, cache_dir)
    return training, result, module, image_files, cache_dir


def test_variants_follow_their_originals_with_the_same_labels(library_run):
    (features, labels, image_files), result, _, originals, _ = library_run
    assert (result.copies, result.variants, result.computed) == (3, 18, 18)
    assert features.shape == (24, 6) and features.dtype == np.float32
    assert labels.tolist() == ([image.label_index for image in originals]
                               + [image.label_index for image in originals for _ in range(3)])
    assert image_files[:6] == originals
    assert [variant.path for variant in image_files[6:]] == [
        image.path for image in originals for _ in range(3)]


def test_variants_differ_from_their_original_and_from_each_other(library_run):
    features = library_run[0][0]
    for index in range(6):
        original = features[index]
        copies = features[6 + 3 * index:6 + 3 * index + 3]
        for copy in copies:
            assert np.abs(copy - original).max() > 1e-3
        for first in range(3):
            for second in range(first + 1, 3):
                assert np.abs(copies[first] - copies[second]).max() > 1e-3


def test_variants_are_cached_and_deterministic(library_run, tmp_path):
    (features, _, _), _, module, image_files, cache_dir = library_run
    (again, _, _), result = _variants(image_files, module, cache_dir)
    assert result.computed == 0
    np.testing.assert_array_equal(again, features)
    # Computed afresh in another cache: the same variant for the same key.
    (fresh, _, _), result = _variants(image_files, module, tmp_path / "other_cache")
    assert result.computed == 18
    np.testing.assert_allclose(fresh, features, atol=1e-5)


def test_changing_a_setting_computes_new_variants(library_run):
    _, _, module, image_files, cache_dir = library_run
    changed = dataclasses.replace(DISTORTIONS, random_brightness=30)
    _, result = _variants(image_files, module, cache_dir, changed, copies=3)
    assert result.computed == 18
    _, result = _variants(image_files, module, cache_dir, DISTORTIONS, copies=4)
    assert result.computed == 6  # Copies 0-2 are cached; only copy 3 is new.


def test_no_copies_leaves_the_training_split_alone(library_run):
    _, _, module, image_files, cache_dir = library_run
    (features, labels, files), result = _variants(image_files, module, cache_dir,
                                                  Distortions(), copies=0)
    assert len(features) == len(labels) == len(files) == 6
    assert (result.variants, result.computed) == (0, 0)


def _recording_run(config):
    """Runs the pipeline, recording what training and evaluation were given."""
    seen = {}

    def recording_train_head(*args, **kwargs):
        seen["training"], seen["validation"] = args[:2], args[2:4]
        return real_train_head(*args, **kwargs)

    def recording_evaluate_head(head, features, labels, test_images, *args, **kwargs):
        seen["testing"] = (features, labels, test_images)
        return real_evaluate_head(head, features, labels, test_images, *args, **kwargs)

    real_train_head, real_evaluate_head = train.train_head, evaluate.evaluate_head
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "train_head", recording_train_head)
        patch.setattr(evaluate, "evaluate_head", recording_evaluate_head)
        return pipeline.run(config), seen


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_module, colour_images):
    root = tmp_path_factory.mktemp("runs")
    cache = root / "cache"
    plain = _recording_run(fast_config(colour_images, tiny_module, root / "plain",
                                       bottleneck_dir=cache))
    augmented = _recording_run(fast_config(colour_images, tiny_module, root / "augmented",
                                           bottleneck_dir=cache, augmentation_copies=2,
                                           **DISTORTION_SETTINGS))
    again = _recording_run(fast_config(colour_images, tiny_module, root / "again",
                                       bottleneck_dir=cache, augmentation_copies=2,
                                       **DISTORTION_SETTINGS))
    return plain, augmented, again, root


def test_only_training_images_get_variants(runs):
    (plain, plain_seen), (augmented, augmented_seen), _, _ = runs
    training_count = len(plain_seen["training"][0])
    assert augmented.augmentation.variants == 2 * training_count
    assert augmented.bottlenecks_computed == 2 * training_count  # The originals were cached.
    features, labels = augmented_seen["training"]
    assert len(features) == 3 * training_count
    np.testing.assert_array_equal(features[:training_count], plain_seen["training"][0])
    np.testing.assert_array_equal(labels[:training_count], plain_seen["training"][1])
    np.testing.assert_array_equal(labels[training_count:],
                                  np.repeat(plain_seen["training"][1], 2))


def test_validation_and_test_stay_undistorted(runs):
    (_, plain_seen), (_, augmented_seen), _, _ = runs
    for part in range(2):
        np.testing.assert_array_equal(augmented_seen["validation"][part],
                                      plain_seen["validation"][part])
        np.testing.assert_array_equal(augmented_seen["testing"][part],
                                      plain_seen["testing"][part])
    assert augmented_seen["testing"][2] == plain_seen["testing"][2]


def test_second_augmented_run_computes_nothing_and_trains_the_same(runs):
    _, (augmented, augmented_seen), (again, again_seen), _ = runs
    assert again.bottlenecks_computed == 0 and again.augmentation.computed == 0
    np.testing.assert_array_equal(again_seen["training"][0], augmented_seen["training"][0])
    assert again.test.top1_accuracy == augmented.test.top1_accuracy >= 0.9


def test_metrics_record_the_settings_and_the_variants(runs):
    (plain, _), (augmented, _), _, root = runs
    metrics = json.loads((root / "augmented" / "metrics.json").read_text())
    variants = augmented.augmentation.variants
    assert metrics["augmentation"] == {
        "flip_left_right": False, **DISTORTION_SETTINGS, "augmentation_copies": 2,
        "variants": variants, "variants_computed": variants}
    assert "augmentation" in metrics["stage_seconds"]
    plain_metrics = json.loads((root / "plain" / "metrics.json").read_text())
    assert plain_metrics["augmentation"]["augmentation_copies"] == 0
    assert plain_metrics["augmentation"]["variants"] == 0


def test_default_copies_apply_when_a_distortion_is_on(tmp_path, tiny_module, colour_images):
    config = fast_config(colour_images, tiny_module, tmp_path, flip_left_right=True)
    assert config.resolved().augmentation_copies == DEFAULT_AUGMENTATION_COPIES
    assert fast_config(colour_images, tiny_module, tmp_path).resolved().augmentation_copies == 0


@pytest.mark.parametrize("settings, message", [
    ({"augmentation_copies": 3}, r"--augmentation_copies=3 has no distortion to apply"),
    ({"random_crop": 150}, r"--random_crop=150 is a percentage from 0 to 100"),
    ({"random_brightness": 10, "augmentation_copies": 0}, r"--augmentation_copies=0 makes no"),
])
def test_bad_settings_fail_before_any_work(tmp_path, tiny_module, colour_images, settings,
                                           message):
    with pytest.raises(UserError, match=message):
        pipeline.run(fast_config(colour_images, tiny_module, tmp_path / "out", **settings))
    assert not (tmp_path / "out").exists()


def test_flags_reach_the_config():
    config = parse_retrain_flags(["--image_dir=p", "--flip_left_right", "--random_crop=10",
                                  "--random_scale=5", "--random_brightness=15",
                                  "--augmentation_copies=2"])
    assert (config.flip_left_right, config.random_crop, config.random_scale,
            config.random_brightness, config.augmentation_copies) == (True, 10, 5, 15, 2)
    defaults = parse_retrain_flags(["--image_dir=p"])
    assert (defaults.flip_left_right, defaults.random_crop, defaults.augmentation_copies) == (
        False, 0, None)


def test_compare_augmented_method(tmp_path, tiny_module, colour_images):
    base = fast_config(colour_images, "unused", "unused", augmentation_copies=1)
    rows = compare.compare(base, [tiny_module], ["frozen", "augmented"], str(tmp_path), None)
    assert [row.method for row in rows] == ["frozen", "augmented"]
    assert not any(row.error for row in rows)
    frozen, augmented = [json.loads(open(os.path.join(row.output_dir, "metrics.json"),
                                         encoding="utf-8").read())["augmentation"] for row in rows]
    assert frozen["augmentation_copies"] == 0
    variants = augmented["variants"]
    assert augmented == {"flip_left_right": False, "random_crop": 10, "random_scale": 10,
                         "random_brightness": 10, "augmentation_copies": 1,
                         "variants": variants, "variants_computed": variants}
    assert rows[1].bottlenecks_computed == augmented["variants"] > 0


def test_compare_checks_distortions_before_any_work(tmp_path, tiny_module, colour_images):
    base = fast_config(colour_images, "unused", "unused", random_crop=101)
    with pytest.raises(UserError, match=r"--random_crop=101 is a percentage"):
        compare.compare(base, [tiny_module], ["frozen", "augmented"], str(tmp_path / "out"), None)
    assert not (tmp_path / "out").exists()
