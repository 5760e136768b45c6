"""Tests of the EfficientNet-Lite backbones: conversion on real photos, SavedModel, reuse."""

import os

import numpy as np
import pytest
import skimage.data
import skimage.io
import skimage.transform
import sklearn.datasets
import tensorflow as tf
import tensorflow_hub as hub

from retrain.features import backbones
from retrain.features.backbones import builder
from retrain.features.backbones import efficientnet_lite

# ImageNet-1k class ids that count as a correct top-1 for each photo.
_EXPECTED_CLASSES = {
    "coffee": {967},  # espresso
    "chelsea": set(range(281, 286)),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "motorcycle_left": {665},  # moped
    "flower": {985},  # daisy
}


def _read_photo(name):
    """Returns a photo shipped with scikit-image or scikit-learn as uint8 [height, width, 3]."""
    if name == "flower":
        return sklearn.datasets.load_sample_image("flower.jpg")
    if name == "motorcycle_left":
        return skimage.io.imread(os.path.join(skimage.data.data_dir, "motorcycle_left.png"))
    return getattr(skimage.data, name)()


def _centre_crop_and_resize(photo, size):
    """Returns float32 [size, size, 3] in [0, 1]: the centred square of `photo`, resized."""
    height, width = photo.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = photo[top:top + side, left:left + side, :3]
    return skimage.transform.resize(square, (size, size), anti_aliasing=True).astype(np.float32)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("retrain_cache"))


@pytest.fixture(scope="session")
def lite0(cache_dir):
    return backbones.ensure_backbone("efficientnet_lite0", cache_dir=cache_dir)


@pytest.fixture(scope="session")
def lite0_classifier(tmp_path_factory):
    target_dir = str(tmp_path_factory.mktemp("classifier") / "efficientnet_lite0")
    backbones.build_classifier_saved_model("efficientnet_lite0", target_dir)
    return tf.saved_model.load(target_dir)


@pytest.fixture(scope="session")
def photos_224():
    return {name: _centre_crop_and_resize(_read_photo(name), 224) for name in _EXPECTED_CLASSES}


def test_classifier_recognizes_real_photos(lite0_classifier, photos_224):
    names = list(_EXPECTED_CLASSES)
    probabilities = lite0_classifier(np.stack([photos_224[name] for name in names]), training=False)
    probabilities = probabilities.numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    top_classes = dict(zip(names, probabilities.argmax(axis=1)))
    assert all(top_classes[name] in _EXPECTED_CLASSES[name] for name in names), top_classes
    assert probabilities[names.index("coffee"), 967] > 0.8


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_variants_recognize_espresso_at_their_native_size(name):
    spec = backbones.BUILTIN_BACKBONES[name]
    weight_path = builder.find_package_weight_file(spec)
    model = efficientnet_lite.build_model(spec, weight_path, include_top=True)
    photo = _centre_crop_and_resize(_read_photo("coffee"), spec.image_size[0])
    probabilities = model(photo[np.newaxis], training=False).numpy()[0]
    assert probabilities.argmax() == 967


def test_feature_vector_saved_model_follows_the_hub_convention(lite0):
    assert lite0.image_size == (224, 224) and lite0.feature_dim == 1280
    module = tf.saved_model.load(lite0.saved_model_dir)
    signature = module.signatures["serving_default"]
    assert signature.structured_input_signature[1]["images"].shape.as_list() == [None, 224, 224, 3]
    assert module.trainable_variables and hasattr(module, "regularization_losses")
    images = np.random.default_rng(0).random((2, 224, 224, 3), dtype=np.float32)
    features = module(images, training=False).numpy()
    assert features.shape == (2, 1280) and features.dtype == np.float32
    # ReLU6 before the average pool bounds every feature to [0, 6].
    assert features.min() >= 0.0 and features.max() <= 6.0
    served = signature(images=tf.constant(images))["feature_vector"].numpy()
    np.testing.assert_allclose(served, features, atol=1e-6)


def test_hub_keras_layer_gives_the_in_memory_model_output(lite0, photos_224):
    images = np.stack([photos_224["coffee"], photos_224["chelsea"]])
    expected = backbones.build_feature_model("efficientnet_lite0")(images, training=False)
    layer = hub.KerasLayer(lite0.saved_model_dir, trainable=True)
    np.testing.assert_allclose(layer(images, training=False), expected, atol=1e-5)
    # Fine-tuning needs the conv kernels and biases as trainable weights.
    assert len(layer.trainable_weights) == 2 * 1 + 2 * 3 * 15 + 2 * 2 + 2 * 1


def test_second_use_reuses_the_build(lite0, cache_dir, monkeypatch):
    saved_model_file = os.path.join(lite0.saved_model_dir, "saved_model.pb")
    before = os.stat(saved_model_file)

    def fail_if_called(*unused_args):
        raise AssertionError("the backbone was rebuilt")

    monkeypatch.setattr(builder, "save_model", fail_if_called)
    again = backbones.ensure_backbone("efficientnet_lite0", cache_dir=cache_dir)
    assert again == lite0
    after = os.stat(saved_model_file)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
