"""ALL-CNN-C (Springenberg et al. 2015) as normalized in the DWCK paper."""

import keras

from keras_norms.models.arguments import (
    check_builder_arguments,
    check_kernel_initializer,
    check_width_multiplier,
)
from keras_norms.models.blocks import conv_norm_act

# Running-average momentum of BN, DWCK and learned statistics. Keras' 0.99 leaves ~10 % of the
# initial variance (1) after 230 steps, which swamped the ~0.01 activation
# variance of a 10-epoch digits run (test accuracy at chance with batch
# statistics at 98.5 %); 0.9 converges within an epoch.
MOMENTUM = 0.9
_TABLE_SIZE = 32
# Section 4's table: (filters, kernel size, stride, DWCK stack for 32x32 inputs).
# Each convolution but the last is followed by ReLU and then the normalization.
ARCHITECTURE = (
    (96, 3, 1, [(4, 4), (2, 2), (2, 2), (2, 2)]),
    (96, 3, 1, [(4, 4), (2, 2), (2, 2), (2, 2)]),
    (96, 3, 2, [(4, 4), (2, 2), (2, 2)]),
    (192, 3, 1, [(4, 4), (2, 2), (2, 2)]),
    (192, 3, 1, [(4, 4), (2, 2), (2, 2)]),
    (192, 3, 2, [(2, 2), (2, 2)]),
    (192, 3, 1, [(2, 2), (2, 2)]),
    (192, 1, 1, [(2, 2)]),
)


def _norm_options(norm, index, table_stack):
    """The normalization's arguments at layer `index` (the table's DWCK stack, 5.1's nets)."""
    options = {"momentum": MOMENTUM}
    if norm in ("dwck", "dwck_weighted"):
        options["kernel_sizes"] = table_stack
    elif norm == "learned":
        options["network"] = "first" if index == 0 else "other"
    return options


def all_cnn_c(
    input_shape=(32, 32, 3),
    num_classes=10,
    norm="dwck",
    name=None,
    synchronized=False,
    kernel_initializer="glorot_uniform",
    width_multiplier=1.0,
):
    """Build ALL-CNN-C with one of the DWCK paper's normalizations.

    (96, 3x3), (96, 3x3), (96, 3x3, stride 2), (192, 3x3), (192, 3x3),
    (192, 3x3, stride 2), (192, 3x3), (192, 1x1), each with ReLU and then
    the normalization, then (num_classes, 1x1) and global average pooling
    to logits (apply softmax in the loss). "same" padding throughout, so a
    32x32 input gives maps of 32, 16 and 8, the sizes the table's DWCK
    stacks reduce.

    `norm`: `"none"`; `"bn"`: Keras `BatchNormalization`; `"dwck"`:
    `DWCKNormalization` with the table's stacks for 32x32 inputs
    ((4,4)+3x(2,2) for the first two layers, (4,4)+2x(2,2) for layers 3-5,
    2x(2,2) for layers 6-7, one (2,2) for layer 8; maps not reduced to 1x1
    are averaged uniformly), derived stacks for other sizes;
    `"dwck_weighted"`: the same with the weighted variance of eq. 8
    (`weighted_variance=True`) instead of the simple one;
    `"learned"`: `LearnedStatisticsNormalization`, with the first layer's
    smaller networks (section 5.1). All three keep running averages with
    momentum 0.9 (`MOMENTUM`), which converge within the first epoch.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.
        norm: one of `"none"`, `"bn"`, `"dwck"`, `"dwck_weighted"`, `"learned"`.
        name: model name; defaults to `"all_cnn_c_<norm>"`.
        synchronized: passed to every batch-statistics layer: `True`
            all-reduces their statistics over `tf.distribute` replicas.
        kernel_initializer: the initializer of every convolution kernel (the
            normalization layers' own parameters, DWCK's kernels and the
            learned-statistics networks, keep theirs): anything
            `keras.initializers.get` accepts, e.g. `"he_normal"` (He et al.
            2015, for these ReLU layers) or an `Initializer` instance (an
            unseeded one is copied per kernel). Defaults to
            `"glorot_uniform"`, Keras' default.
        width_multiplier: every hidden layer's filter count is multiplied by
            it and rounded (at least 1), as `alpha` in Keras' MobileNet; the
            logits keep `num_classes`. Defaults to 1.0, the paper's widths.

    Returns:
        A functional `keras.Model` from `(batch, H, W, C)` images to
        `(batch, num_classes)` logits.

    Raises:
        ValueError: for an unknown `norm`, a malformed `input_shape`, a
            bad `num_classes`, a `kernel_initializer` that `keras.initializers.get`
            refuses, or a `width_multiplier` that is not positive and finite
            (before any layer is built).

    Reference:
        Esposito & Ganaba, "Convolutional Normalization" (arXiv:2102.09685),
        section 4 table and section 5.1; Springenberg et al., "Striving for
        Simplicity: The All Convolutional Net", ICLR 2015 workshop.
    """
    input_shape, num_classes = check_builder_arguments("all_cnn_c", input_shape, num_classes, norm)
    initializer = check_kernel_initializer("all_cnn_c", kernel_initializer)
    scale = check_width_multiplier("all_cnn_c", width_multiplier)
    table = input_shape[:2] == (_TABLE_SIZE, _TABLE_SIZE)
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for index, (filters, size, stride, stack) in enumerate(ARCHITECTURE):
        x = conv_norm_act(
            x,
            scale(filters),
            size,
            stride,
            norm=norm,
            name=f"conv{index + 1}",
            kernel_initializer=initializer(),
            conv_activation="relu",
            norm_options=_norm_options(norm, index, stack if table else None),
            synchronized=synchronized,
        )
    x = keras.layers.Conv2D(num_classes, 1, kernel_initializer=initializer(), name="conv9")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"all_cnn_c_{norm}")
