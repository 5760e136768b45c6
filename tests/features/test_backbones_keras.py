"""Tests of the keras/... backbones, offline: random weights check plumbing, shapes and export."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from retrain.errors import UserError
from retrain.features import backbones
from retrain.features.backbones import builder
from retrain.features.backbones import keras_applications

_KERAS_BACKBONES = sorted(name for name in backbones.BUILTIN_BACKBONES if name.startswith("keras/"))

# Building, tracing and saving these takes 25-65 s each on 2 cores (the other three: 8-22 s).
_SLOW_BACKBONES = {"keras/densenet201", "keras/inception_v3", "keras/xception"}
_KERAS_BACKBONE_PARAMETERS = [
    pytest.param(name, marks=pytest.mark.slow) if name in _SLOW_BACKBONES else name
    for name in _KERAS_BACKBONES
]

# The module each application's own preprocess_input lives in.
_APPLICATION_MODULES = {
    "keras/vgg16": tf_keras.applications.vgg16,
    "keras/vgg19": tf_keras.applications.vgg19,
    "keras/resnet50": tf_keras.applications.resnet50,
    "keras/inception_v3": tf_keras.applications.inception_v3,
    "keras/xception": tf_keras.applications.xception,
    "keras/densenet201": tf_keras.applications.densenet,
}


@pytest.mark.parametrize("name", _KERAS_BACKBONES)
def test_folded_preprocessing_matches_the_application(name):
    spec = backbones.BUILTIN_BACKBONES[name]
    images = np.random.default_rng(0).random((2, 4, 4, 3), dtype=np.float32)
    folded = keras_applications.ImageNetPreprocessing(spec.preprocessing_mode)(images)
    expected = _APPLICATION_MODULES[name].preprocess_input(images * 255.0)
    np.testing.assert_allclose(folded, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", _KERAS_BACKBONE_PARAMETERS)
def test_builds_with_random_weights_and_survives_save_and_load(name, tmp_path):
    spec = backbones.BUILTIN_BACKBONES[name]
    model = backbones.build_feature_model(name, weights_path=backbones.RANDOM_WEIGHTS)
    images = np.random.default_rng(0).random((1, *spec.image_size, 3), dtype=np.float32)
    features = model(images, training=False).numpy()
    assert features.shape == (1, spec.feature_dim) and features.dtype == np.float32
    builder.save_model(model, str(tmp_path))
    module = tf.saved_model.load(str(tmp_path))
    np.testing.assert_allclose(module(images, training=False), features, rtol=1e-4, atol=1e-5)
    signature = module.signatures["serving_default"]
    image_spec = signature.structured_input_signature[1]["images"]
    assert image_spec.shape.as_list() == [None, *spec.image_size, 3]


def test_ensure_backbone_builds_a_keras_backbone_into_the_cache(tmp_path):
    built = backbones.ensure_backbone("keras/vgg16", str(tmp_path), backbones.RANDOM_WEIGHTS)
    assert built.identity == "keras/vgg16:random:builder-v1"
    assert (built.image_size, built.feature_dim) == ((224, 224), 512)
    module = tf.saved_model.load(built.saved_model_dir)
    features = module(np.zeros((1, 224, 224, 3), np.float32), training=False)
    assert features.shape == (1, 512)


def test_loads_a_local_weights_file_and_refuses_another_networks(tmp_path):
    # What the Keras weight store's vgg16 'notop' file holds: the headless application's weights.
    weights_path = str(tmp_path / "vgg16_notop.h5")
    random_model = backbones.build_feature_model("keras/vgg16", backbones.RANDOM_WEIGHTS)
    random_model.layers[-1].save_weights(weights_path)
    loaded_model = backbones.build_feature_model("keras/vgg16", weights_path)
    for loaded, saved in zip(loaded_model.get_weights(), random_model.get_weights()):
        np.testing.assert_array_equal(loaded, saved)
    with pytest.raises(UserError, match="vgg16_notop.h5.*'notop'.*VGG19"):
        backbones.build_feature_model("keras/vgg19", weights_path)


def test_unreachable_weight_store_suggests_a_local_file(monkeypatch, tmp_path):
    def fail_to_download(**unused_kwargs):
        # What tf_keras' get_file raises when the Keras weight store cannot be reached.
        raise Exception("URL fetch failure on https://storage.googleapis.com/...")

    monkeypatch.setattr(tf_keras.applications, "ResNet50", fail_to_download)
    with pytest.raises(UserError, match="Keras weight store.*weights_path=.*efficientnet_lite0"):
        backbones.ensure_backbone("keras/resnet50", cache_dir=str(tmp_path))
    assert not (tmp_path / "backbones").exists() or not any((tmp_path / "backbones").iterdir())
