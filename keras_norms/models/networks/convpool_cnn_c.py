"""ConvPool-CNN-C (Springenberg et al. 2015) as trained by Salimans & Kingma."""

import keras

from keras_norms.models.arguments import (
    check_builder_arguments,
    check_kernel_initializer,
    check_width_multiplier,
)
from keras_norms.models.blocks import conv_norm_act, weight_normalized

NOISE_STDDEV = 0.15
LEAKY_RELU_SLOPE = 0.1
DROPOUT_RATE = 0.5
# Figure 8 of Liao & Gong's replication of Salimans & Kingma (Columbia University):
# ("conv", filters, kernel size, padding) | ("pool",) | ("dropout",).
ARCHITECTURE = (
    ("conv", 96, 3, "same"),
    ("conv", 96, 3, "same"),
    ("conv", 96, 3, "same"),
    ("pool",),
    ("dropout",),
    ("conv", 192, 3, "same"),
    ("conv", 192, 3, "same"),
    ("conv", 192, 3, "same"),
    ("pool",),
    ("dropout",),
    ("conv", 192, 3, "valid"),
    ("conv", 192, 1, "same"),
    ("conv", 192, 1, "same"),
)


def convpool_cnn_c(
    input_shape=(32, 32, 3),
    num_classes=10,
    norm="wn_mobn",
    name=None,
    synchronized=False,
    kernel_initializer="glorot_uniform",
    width_multiplier=1.0,
):
    """Build ConvPool-CNN-C with one of the paper's five normalizations.

    Gaussian noise (std 0.15), 3 x conv 3x3 96, max-pool 2, dropout 0.5,
    3 x conv 3x3 192, max-pool 2, dropout 0.5, conv 3x3 192 (valid),
    2 x conv 1x1 192, global average pooling, dense `num_classes` (logits);
    every convolution is followed by leaky ReLU (slope 0.1)
    (Liao & Gong's replication, section 6J, Figure 8; Salimans & Kingma 2016,
    arXiv:1602.07868, section 5.1).

    `norm` selects the configuration (paper section 7, Figure 9):
    `"none"`: plain convolutions with biases; `"wn"`: every convolution and
    the dense layer weight-normalized; `"mobn"`: every convolution (no bias)
    followed by `MeanOnlyBatchNormalization`; `"bn"`: every convolution (no
    bias) followed by Keras `BatchNormalization`; `"wn_mobn"`: weight-
    normalized convolutions (no bias) followed by mean-only BN, and a
    weight-normalized dense layer. The dense layer of `"mobn"` and `"bn"` is
    a plain `Dense`: the logits are not batch-normalized. Activations are
    separate `LeakyReLU` layers, so each normalization follows a linear
    layer (which export folds into it).

    Args:
        input_shape: `(height, width, channels)`, each side at least 12.
        num_classes: number of output logits.
        norm: one of `"none"`, `"wn"`, `"mobn"`, `"bn"`, `"wn_mobn"`.
        name: model name; defaults to `"convpool_cnn_c_<norm>"`.
        synchronized: passed to every batch-statistics layer: `True`
            all-reduces their statistics over `tf.distribute` replicas.
        kernel_initializer: the initializer of every convolution kernel and
            of the dense kernel (under weight normalization, of the wrapped
            layer's kernel `v`; `g` starts at `||v||` until
            `keras_norms.data_dependent_init`): anything
            `keras.initializers.get` accepts, e.g. `"he_normal"` or an
            `Initializer` instance (an unseeded one is copied per kernel).
            Defaults to `"glorot_uniform"`, Keras' default.
        width_multiplier: every hidden layer's filter count is multiplied by
            it and rounded (at least 1), as `alpha` in Keras' MobileNet; the
            logits keep `num_classes`. Defaults to 1.0, the paper's widths.

    Returns:
        A functional `keras.Model` mapping `(batch, height, width, channels)`
        float images (standardized) to `(batch, num_classes)` logits.

    Raises:
        ValueError: for an unknown `norm`, a malformed `input_shape`, a side
            smaller than 12, a non-positive `num_classes`, a `kernel_initializer`
            that `keras.initializers.get` refuses, or a `width_multiplier`
            that is not positive and finite (before any layer is built).
    """
    input_shape, num_classes = check_builder_arguments(
        "convpool_cnn_c", input_shape, num_classes, norm
    )
    initializer = check_kernel_initializer("convpool_cnn_c", kernel_initializer)
    scale = check_width_multiplier("convpool_cnn_c", width_multiplier)
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.GaussianNoise(NOISE_STDDEV, name="noise")(inputs)
    counts = {"conv": 0, "pool": 0, "dropout": 0}
    for kind, *spec in ARCHITECTURE:
        counts[kind] += 1
        name_ = f"{kind}{counts[kind]}"
        if kind == "pool":
            x = keras.layers.MaxPooling2D(2, name=name_)(x)
        elif kind == "dropout":
            x = keras.layers.Dropout(DROPOUT_RATE, name=name_)(x)
        else:
            filters, size, padding = spec
            x = conv_norm_act(
                x,
                scale(filters),
                size,
                norm=norm,
                name=name_,
                kernel_initializer=initializer(),
                padding=padding,
                activation=keras.layers.LeakyReLU(LEAKY_RELU_SLOPE, name=f"{name_}_act"),
                synchronized=synchronized,
            )
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    dense = keras.layers.Dense(num_classes, kernel_initializer=initializer(), name="logits")
    outputs = weight_normalized(dense, norm, "logits_wn")(x)
    return keras.Model(inputs, outputs, name=name or f"convpool_cnn_c_{norm}")
