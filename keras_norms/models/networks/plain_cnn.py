"""A deep plain ReLU network for the Xavier-versus-Kaiming initialization experiment.

The notes "Initialization and Normalization in DNN and CNN", section 1.2, after He et
al. 2015 (arXiv:1502.01852, section 2.2): in a plain (no shortcut, no
normalization) ReLU network at initialization, with zero biases and i.i.d.
symmetric kernels, each layer multiplies the variance of the pre-activation
by `n_{l-1} Var[W_l] / 2` (eq. 1.36; the 1/2 is ReLU's, eq. 1.35), where
`n_{l-1} = c_l (2k+1)^2` is a 3x3 convolution's fan-in (eq. 1.44).
Kaiming's `Var[W] = 2 / (c_l (2k+1)^2)` (eq. 1.46, `"he_normal"`) makes
that factor 1; Xavier's `2 / ((c_l + h_l)(2k+1)^2)` (eq. 1.45,
`"glorot_normal"`) makes it 1/2 where fan-in equals fan-out (`c_l = h_l`),
so after `L` such layers the variance has shrunk by `2^-L`. The notes' 22-layer
model converges with both, Kaiming's earlier; their 30-layer model stalls
with Xavier's.

The network keeps every convolution at `width` filters, so every
convolution after the first has fan-in equal to fan-out and Xavier's
variance is exactly half of Kaiming's, as the comparison needs (the first
has fan-in `9 * channels`; the dense layer `width` in, `num_classes` out).
"same" zero padding loses a little more at the maps' borders, for both
initializations alike (a factor 1.75 over 10 convolutions of a depth-12
network on 32x32 inputs; `tests/models/test_plain_cnn.py` predicts it).

Recipe: SGD with momentum 0.9 from learning rate 0.01, as He et al.
train (they also use weight decay 5e-4 and divide the rate by 10 when the
error plateaus); batch 64, as ALL-CNN-C's recipe here, for the small digits
set; a constant rate, so that whether and when each initialization starts to
learn is not confounded with a decay step (`--schedule tenfold` for one);
no weight decay, so that only the initialization differs between runs
(`--weight-decay 5e-4` for He et al.'s). Digits at 16x16: maps of 16, 8
and 4.
"""

import keras

from keras_norms.layers.arguments import is_integer
from keras_norms.models.arguments import check_builder_arguments, check_kernel_initializer
from keras_norms.models.blocks import conv_norm_act

KERNEL_SIZE = 3
# The convolutions are split into thirds; the first convolution of the
# second and of the third is strided.
STAGES = 3
DOWNSAMPLING_STRIDE = 2


def strided_convolutions(convolutions):
    """The 0-based indices of the stride-2 convolutions among `convolutions`.

    The first convolution of the second and of the third third of the stack,
    `convolutions // 3` and `2 * convolutions // 3`, where above 0: none for
    one convolution, one for two.
    """
    return sorted({stage * convolutions // STAGES for stage in range(1, STAGES)} - {0})


def _check_positive_int(name, value, minimum, meaning):
    if not is_integer(value) or value < minimum:
        raise ValueError(f"plain_cnn expects {meaning}. Received: {name}={value!r}")
    return int(value)


def plain_cnn(
    input_shape=(32, 32, 3),
    num_classes=10,
    norm="none",
    depth=22,
    width=16,
    kernel_initializer="he_normal",
    name=None,
    synchronized=False,
):
    """Build a plain ReLU network of `depth` weight layers for the initialization experiment.

    `depth - 1` convolutions 3x3, `width` filters each, "same" padding,
    biases initialized to zero, each followed by ReLU; then global average
    pooling and a dense layer to `num_classes` logits. `depth` counts the
    weight layers, convolutions and the dense layer, as He et al. do (their
    30-layer model: 27 convolutions and 3 fully-connected layers). The first
    convolution of the second and of the third third of the convolutions
    (0-based indices `(depth - 1) // 3` and `2 * (depth - 1) // 3`, where
    above 0; see `strided_convolutions`) has stride 2, so a 32x32 input
    gives maps of 32, 16 and 8 (the layout of He et al. 2016's CIFAR plain
    networks, without their widening). No dropout, no pooling but the last.

    `norm="none"`: the experiment's setting, the notes' eq. 1.21 with
    convolutions; `"bn"`: each convolution without bias followed by Keras
    `BatchNormalization`, then ReLU (the notes' section 1.3), for comparison.
    Layers are named `conv1`...`conv{depth-1}` (pre-activations),
    `conv{i}_bn`, `conv{i}_relu` and `logits`.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.
        norm: `"none"` or `"bn"`.
        depth: integer >= 2, the number of weight layers: `depth - 1`
            convolutions and the dense layer. The notes' two models have
            22 and 30.
        width: positive integer, the filters of every convolution.
        kernel_initializer: the initializer of every convolution kernel and
            of the dense kernel: anything `keras.initializers.get` accepts.
            Defaults to `"he_normal"` (Kaiming's, eq. 1.41 and 1.46:
            variance `2 / fan_in`); `"glorot_normal"` or `"glorot_uniform"`
            is Xavier's (eq. 1.31-1.32 and 1.45: `2 / (fan_in + fan_out)`).
            An unseeded `Initializer` instance is copied per kernel.
        name: model name; defaults to `"plain_cnn<depth>_<norm>"`.
        synchronized: passed to every batch-statistics layer: `True`
            all-reduces their statistics over `tf.distribute` replicas.

    Returns:
        A functional `keras.Model` from `(batch, H, W, C)` images to
        `(batch, num_classes)` logits.

    Raises:
        ValueError: for an unknown `norm`, a malformed `input_shape`, a bad
            `num_classes`, a `depth` that is not an integer >= 2, a `width`
            that is not a positive integer, or a `kernel_initializer` that
            `keras.initializers.get` refuses (before any layer is built).

    Reference:
        "Initialization and batch normalization notes", section 1.2
        (eq. 1.21-1.48, Fig. 1.1-1.2); He et al., "Delving Deep into
        Rectifiers", ICCV 2015 (arXiv:1502.01852), section 2.2; Glorot &
        Bengio, AISTATS 2010.
    """
    input_shape, num_classes = check_builder_arguments("plain_cnn", input_shape, num_classes, norm)
    depth = _check_positive_int(
        "depth",
        depth,
        2,
        "an integer depth >= 2 (weight layers: depth - 1 convolutions and the dense layer)",
    )
    width = _check_positive_int("width", width, 1, "a positive integer width")
    initializer = check_kernel_initializer("plain_cnn", kernel_initializer)
    convolutions = depth - 1
    strided = strided_convolutions(convolutions)
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for index in range(convolutions):
        layer_name = f"conv{index + 1}"
        x = conv_norm_act(
            x,
            width,
            KERNEL_SIZE,
            DOWNSAMPLING_STRIDE if index in strided else 1,
            norm=norm,
            name=layer_name,
            kernel_initializer=initializer(),
            activation=keras.layers.ReLU(name=f"{layer_name}_relu"),
            synchronized=synchronized,
            bias_initializer="zeros",
        )
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=initializer(), bias_initializer="zeros", name="logits"
    )(x)
    return keras.Model(inputs, outputs, name=name or f"plain_cnn{depth}_{norm}")
