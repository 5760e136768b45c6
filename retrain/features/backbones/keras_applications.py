"""The seed networks (VGG16, ResNet50, ...) from tf_keras.applications as feature-vector models.

Each takes images in [0, 1] like every other retrain module: the network's own
`preprocess_input` (which expects RGB in [0, 255]) is folded into the model, and the last
feature map is global-average-pooled to a vector.

tf_keras (the Keras 2 API) is used rather than Keras 3's `tf.keras` because `tf.saved_model.save`
and `hub.KerasLayer` work cleanly with tf_keras models.
"""

import os

import tensorflow as tf
import tf_keras

from retrain.errors import UserError
from retrain.features.backbones.specs import RANDOM_WEIGHTS


class ImageNetPreprocessing(tf_keras.layers.Layer):
    """Maps float32 images [batch, height, width, 3] in [0, 1] to what a network expects.

    `mode` is the `tf_keras.applications.imagenet_utils.preprocess_input` mode: "caffe"
    (BGR, ImageNet mean subtracted on [0, 255]), "tf" ([-1, 1]) or "torch" (ImageNet mean and
    standard deviation on [0, 1]).
    """

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, images):
        return tf_keras.applications.imagenet_utils.preprocess_input(
            tf.cast(images, tf.float32) * 255.0, mode=self.mode
        )

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _resolve_weights(spec, weights_path):
    """Returns the `weights` argument of the tf_keras.applications constructor."""
    if weights_path is None:
        return "imagenet"
    if weights_path == RANDOM_WEIGHTS:
        return None
    if not os.path.isfile(weights_path):
        raise UserError(
            f"Weights file {weights_path!r} for {spec.name} does not exist. Give the path of the "
            f"Keras 'notop' .h5 weights of {spec.keras_application}, or {RANDOM_WEIGHTS!r}."
        )
    return weights_path


def _build_application(spec, weights):
    """Returns the headless, average-pooled tf_keras application; wraps load failures."""
    constructor = getattr(tf_keras.applications, spec.keras_application)
    try:
        return constructor(
            include_top=False, weights=weights, input_shape=(*spec.image_size, 3), pooling="avg"
        )
    # tf_keras' get_file raises a bare Exception when offline; h5 loading raises several types.
    except Exception as error:  # pylint: disable=broad-except
        if weights == "imagenet":
            raise UserError(
                f"Could not get the ImageNet weights of {spec.name} from the Keras weight store "
                f"({error}). Offline, pass weights_path=<the {spec.keras_application} 'notop' .h5 "
                "file>, or use the default backbone efficientnet_lite0, which needs no network."
            ) from error
        raise UserError(
            f"Could not load {weights!r} into {spec.name} ({error}). It must be the Keras "
            f"'notop' (include_top=False) .h5 weights of {spec.keras_application}."
        ) from error


def build_model(spec, weights_path=None):
    """Builds a tf_keras.applications network as a feature-vector model.

    Args:
        spec: BackboneSpec of a "keras_application" backbone.
        weights_path: None for the ImageNet weights from the Keras weight store (downloaded once
            and cached by Keras under ~/.keras/models); a path to the network's Keras 'notop'
            .h5 weights file; or RANDOM_WEIGHTS ("random") for random weights with no download.

    Returns:
        tf_keras.Model mapping float32 images [batch, height, width, 3] in [0, 1]
        (height, width = spec.image_size) to float32 features [batch, spec.feature_dim].
    """
    application = _build_application(spec, _resolve_weights(spec, weights_path))
    inputs = tf_keras.Input((*spec.image_size, 3), name="images")
    preprocessed = ImageNetPreprocessing(spec.preprocessing_mode, name="preprocess")(inputs)
    features = application(preprocessed)
    return tf_keras.Model(inputs, features, name=spec.name.replace("/", "_"))
