"""Network in Network (Lin et al. 2014) as trained in the NormProp paper."""

import keras

from keras_norms.models.arguments import (
    check_builder_arguments,
    check_kernel_initializer,
    check_width_multiplier,
)
from keras_norms.models.blocks import conv_norm_act
from keras_norms.models.registry import get_builder

DATA_NORMALIZATIONS = get_builder("nin").data_normalizations
# Section 5 protocol of Arpit et al. 2016 (arXiv:1603.01431), one
# row per C(filters, size, stride, padding) or P(size, stride, padding, mode):
# (kind, filters, size, stride, padding, pooling mode). The last
# convolution's filters (None) are the number of classes.
ARCHITECTURE = (
    ("conv", 192, 5, 1, 2, None),
    ("conv", 160, 1, 1, 0, None),
    ("pool", None, 3, 2, 1, "max"),
    ("conv", 96, 1, 1, 0, None),
    ("conv", 192, 5, 1, 2, None),
    ("conv", 192, 1, 1, 0, None),
    ("pool", None, 3, 2, 1, "avg"),
    ("conv", 192, 1, 1, 0, None),
    ("conv", 192, 5, 1, 0, None),
    ("conv", 192, 1, 1, 2, None),
    ("conv", None, 1, 1, 0, None),
    ("pool", None, 8, 8, 0, "avg"),
)


def _check_data_normalization(data_normalization):
    if not (
        data_normalization is None
        or data_normalization in DATA_NORMALIZATIONS
        or isinstance(data_normalization, keras.layers.Layer)
    ):
        raise ValueError(
            f"nin expects data_normalization in {DATA_NORMALIZATIONS}, None or a "
            f"Keras layer. Received: data_normalization={data_normalization!r}"
        )


def _data_normalization(x, input_shape, data_normalization, synchronized):
    """Section 4.1: global (adapted statistics) or batch data normalization."""
    if data_normalization is None:
        return x
    if isinstance(data_normalization, keras.layers.Layer):
        return data_normalization(x)
    if data_normalization == "global":
        layer = keras.layers.Normalization(axis=(1, 2, 3), name="global_data_normalization")
        return layer(x)
    # Every element standardized over the mini-batch, with running estimates
    # for inference (section 4.5): BN over the flattened features.
    x = keras.layers.Reshape((-1,), name="flatten_pixels")(x)
    x = keras.layers.BatchNormalization(
        center=False, scale=False, synchronized=synchronized, name="batch_data_normalization"
    )(x)
    return keras.layers.Reshape(input_shape, name="unflatten_pixels")(x)


def _conv(x, filters, size, stride, padding, norm, last, name, synchronized, initializer):
    """C(filters, size, stride, padding): explicit zero padding, then the convolution.

    `initializer()` gives the convolution's kernel initializer.
    """
    if stride == 1 and size % 2 == 1 and padding == (size - 1) // 2:
        mode = "same"  # the same zero padding, in one op
    else:
        mode = "valid"
        if padding:
            x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    common = dict(
        name=name,
        kernel_initializer=initializer(),
        padding=mode,
        synchronized=synchronized,
    )
    if last:  # the logits: no activation, no normalization layer
        norm = "none" if norm == "bn" else norm
        return conv_norm_act(x, filters, size, stride, **common, norm=norm)
    if norm == "bn":
        relu = keras.layers.ReLU(name=f"{name}_relu")
        return conv_norm_act(x, filters, size, stride, **common, norm=norm, activation=relu)
    return conv_norm_act(x, filters, size, stride, **common, norm=norm, conv_activation="relu")


def _pool(x, size, stride, padding, mode, name):
    """P(size, stride, padding, mode) with the paper's padding semantics.

    Max pooling's padding never wins: a stride-1 "same" max pooling (which
    ignores padded positions) centred on each window, then every `stride`-th
    output. Average pooling counts zero padding, as Caffe's NIN does.
    """
    if mode == "max" and padding:
        if size != 2 * padding + 1:
            raise ValueError(f"{name}: max pooling padding must be (size - 1) / 2")
        x = keras.layers.MaxPooling2D(size, strides=1, padding="same", name=f"{name}_window")(x)
        return keras.layers.MaxPooling2D(1, strides=stride, name=name)(x)
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    pooling = keras.layers.MaxPooling2D if mode == "max" else keras.layers.AveragePooling2D
    return pooling(size, strides=stride, name=name)(x)


def nin(
    input_shape=(32, 32, 3),
    num_classes=10,
    norm="normprop",
    data_normalization="batch",
    name=None,
    synchronized=False,
    kernel_initializer="glorot_uniform",
    width_multiplier=1.0,
):
    """Build Network in Network as in the NormProp paper's protocol.

    C(192,5,1,2)-C(160,1,1,0)-P(3,2,1,max)-C(96,1,1,0)-C(192,5,1,2)-
    C(192,1,1,0)-P(3,2,1,avg)-C(192,1,1,0)-C(192,5,1,0)-C(192,1,1,2)-
    C(num_classes,1,1,0)-P(8,8,0,avg), C(filters, size, stride, padding) with
    zero padding, P(size, stride, padding, mode) with max-pool padding that
    never wins; no dropout (section 4.4). Every hidden convolution is
    followed by ReLU; the last one gives the logits, averaged by the final
    pooling (and over any remaining positions for inputs above 32x32).

    `norm="normprop"`: every convolution is a `NormPropConv2D` (the last
    with `activation=None`); `"bn"`: convolution without bias, Keras
    `BatchNormalization`, ReLU (the last convolution plain); `"none"`:
    plain convolutions with biases.

    Args:
        input_shape: `(height, width, channels)`, each side at least 29.
        num_classes: number of logits.
        norm: `"normprop"`, `"bn"` or `"none"`.
        data_normalization: how the input is normalized (section 4.1):
            `"batch"` (default): every element standardized over the
            mini-batch with running estimates for inference (Keras
            `BatchNormalization` on the flattened input, no scale or
            offset); `"global"`: Keras `Normalization(axis=(1, 2, 3))`,
            element-wise, which you must `adapt` on the training images
            (`model.get_layer("global_data_normalization").adapt(x)`); a
            Keras layer (e.g. an adapted `Normalization`) used as is; or
            `None` for inputs already normalized. Batch size 1 needs
            `"global"` or a layer.
        name: model name; defaults to `"nin_<norm>"`.
        synchronized: passed to every batch-statistics layer: `True`
            all-reduces their statistics over `tf.distribute` replicas.
        kernel_initializer: the initializer of every convolution kernel
            (`NormPropConv2D`'s `W` too, which it divides by its norm):
            anything `keras.initializers.get` accepts, e.g. `"he_normal"`
            or an `Initializer` instance (an unseeded one is copied per
            kernel). Defaults to `"glorot_uniform"`, the default of Keras
            and `NormPropConv2D`.
        width_multiplier: every hidden layer's filter count is multiplied by
            it and rounded (at least 1), as `alpha` in Keras' MobileNet; the
            logits keep `num_classes`. Defaults to 1.0, the paper's widths.

    Returns:
        A functional `keras.Model` from `(batch, H, W, C)` images to
        `(batch, num_classes)` logits.

    Raises:
        ValueError: for an unknown `norm` or `data_normalization`, a
            malformed `input_shape`, a side below 29, a bad `num_classes`, a
            `kernel_initializer` that `keras.initializers.get` refuses, or a
            `width_multiplier` that is not positive and finite (before any
            layer is built).

    Reference:
        Arpit et al. 2016, section 5 (protocol); Lin, Chen & Yan, "Network
        In Network", ICLR 2014.
    """
    input_shape, num_classes = check_builder_arguments("nin", input_shape, num_classes, norm)
    _check_data_normalization(data_normalization)
    initializer = check_kernel_initializer("nin", kernel_initializer)
    scale = check_width_multiplier("nin", width_multiplier)
    inputs = keras.Input(shape=input_shape, name="images")
    x = _data_normalization(inputs, input_shape, data_normalization, synchronized)
    counts = {"conv": 0, "pool": 0}
    for kind, filters, size, stride, padding, mode in ARCHITECTURE:
        counts[kind] += 1
        layer_name = f"{kind}{counts[kind]}"
        if kind == "pool":
            x = _pool(x, size, stride, padding, mode, layer_name)
        else:
            last = filters is None
            filters = num_classes if last else scale(filters)
            x = _conv(
                x, filters, size, stride, padding, norm, last, layer_name, synchronized, initializer
            )
    outputs = keras.layers.GlobalAveragePooling2D(name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"nin_{norm}")
