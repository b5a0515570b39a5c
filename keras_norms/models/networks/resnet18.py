"""ResNet-18 (He et al. 2016) with BN, GN, Normalized Convolution or no normalization."""

import keras

from keras_norms.models.arguments import (
    check_builder_arguments,
    check_kernel_initializer,
    check_width_multiplier,
)
from keras_norms.models.blocks import conv_norm_act

ACTIVATIONS = ("relu", "selu")
# (filters, stride of the first block) of the four stages, two basic blocks each.
STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))
# Inputs up to this side use the CIFAR stem (3x3 conv, no max-pool).
CIFAR_STEM_MAX_SIZE = 64


def _conv_norm(x, filters, size, stride, norm, activation, name, synchronized, initializer):
    """Convolution, then its normalization and activation (`activation=None`: none).

    `initializer()` gives the convolution's kernel initializer.
    """
    return conv_norm_act(
        x,
        filters,
        size,
        stride,
        norm=norm,
        name=name,
        kernel_initializer=initializer(),
        activation=activation and keras.layers.Activation(activation, name=f"{name}_{activation}"),
        synchronized=synchronized,
    )


def _basic_block(x, filters, stride, norm, activation, name, synchronized, initializer):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_norm(
            x, filters, 1, stride, norm, None, f"{name}_shortcut", synchronized, initializer
        )
    y = _conv_norm(
        x, filters, 3, stride, norm, activation, f"{name}_conv1", synchronized, initializer
    )
    y = _conv_norm(y, filters, 3, 1, norm, None, f"{name}_conv2", synchronized, initializer)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation(activation, name=f"{name}_out")(y)


def resnet18(
    input_shape=(32, 32, 3),
    num_classes=10,
    norm="bn",
    activation="relu",
    name=None,
    synchronized=False,
    kernel_initializer="glorot_uniform",
    width_multiplier=1.0,
):
    """Build ResNet-18 with basic blocks [2, 2, 2, 2] and 64-512 filters.

    Inputs up to 64x64 use the CIFAR stem (3x3 conv 64, stride 1, no
    max-pool); larger ones the ImageNet stem (7x7 conv 64, stride 2, 3x3
    max-pool, stride 2). Shortcuts are 1x1 convolutions where the shape
    changes. Global average pooling and a dense layer give the logits.

    `norm`: `"bn"` (Keras `BatchNormalization`) or `"gn"` (Keras
    `GroupNormalization`, 32 groups or the largest count below that divides
    the channels) after every convolution; `"nc"`: every convolution
    (shortcuts included) is a `NormalizedConv2D` and there is no separate
    normalization layer, as in the paper; `"none"`: plain convolutions with
    biases. `activation="selu"` is the paper's section 2.3 variant.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.
        norm: one of `"bn"`, `"gn"`, `"nc"`, `"none"`.
        activation: `"relu"` or `"selu"`.
        name: model name; defaults to `"resnet18_<norm>"`.
        synchronized: passed to every batch-statistics layer: `True`
            all-reduces their statistics over `tf.distribute` replicas.
        kernel_initializer: the initializer of every convolution kernel
            (`NormalizedConv2D`'s too, shortcuts included) and of the dense
            kernel: anything `keras.initializers.get` accepts, e.g.
            `"he_normal"` (He et al. 2015, the ResNet paper's) or an
            `Initializer` instance (an unseeded one is copied per kernel).
            Defaults to `"glorot_uniform"`, Keras' default.
        width_multiplier: every hidden layer's filter count is multiplied by
            it and rounded (at least 1), as `alpha` in Keras' MobileNet; the
            logits keep `num_classes`. Defaults to 1.0, the paper's widths.

    Returns:
        A functional `keras.Model` from images to `(batch, num_classes)` logits.

    Raises:
        ValueError: for an unknown `norm` or `activation`, a malformed
            `input_shape`, a bad `num_classes`, a `kernel_initializer` that
            `keras.initializers.get` refuses, or a `width_multiplier` that is
            not positive and finite (before any layer is built).

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016;
        Kim et al., "Normalized Convolution" (section 3, ResNet-18 on CIFAR-10).
    """
    input_shape, num_classes = check_builder_arguments("resnet18", input_shape, num_classes, norm)
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"resnet18 expects activation in {ACTIVATIONS}. Received: activation={activation!r}"
        )
    initializer = check_kernel_initializer("resnet18", kernel_initializer)
    scale = check_width_multiplier("resnet18", width_multiplier)
    inputs = keras.Input(shape=input_shape, name="images")
    if max(input_shape[:2]) <= CIFAR_STEM_MAX_SIZE:
        x = _conv_norm(inputs, scale(64), 3, 1, norm, activation, "stem", synchronized, initializer)
    else:
        x = _conv_norm(inputs, scale(64), 7, 2, norm, activation, "stem", synchronized, initializer)
        x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    for stage, (filters, stride) in enumerate(STAGES, start=1):
        filters = scale(filters)
        block = f"stage{stage}_block"
        x = _basic_block(
            x, filters, stride, norm, activation, f"{block}1", synchronized, initializer
        )
        x = _basic_block(x, filters, 1, norm, activation, f"{block}2", synchronized, initializer)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=initializer(), name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet18_{norm}")
