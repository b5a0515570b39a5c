"""The convolution-normalization-activation unit every builder is made of (timm's `ConvNormAct`)."""

import keras

from keras_norms.layers.weight_norm import WeightNormalization
from keras_norms.norms import get_norm, load, normalization_layer


def weight_normalized(layer, norm, name):
    """`layer` wrapped in `WeightNormalization` named `name` if `norm` asks for it; else `layer`."""
    if get_norm(norm).weight_normalized:
        return WeightNormalization(layer, name=name)
    return layer


def conv_norm_act(
    x,
    filters,
    kernel_size,
    strides=1,
    *,
    norm,
    name,
    kernel_initializer,
    padding="same",
    conv_activation=None,
    activation=None,
    norm_options=None,
    synchronized=False,
    **conv_kwargs,
):
    """A convolution, the normalization `norm` asks for, then `activation`, applied to `x`.

    The norm registry's entry (`keras_norms.norms.NORMS[norm]`) decides the
    layers: the convolution is a Keras `Conv2D` named `name`, or the norm's
    own normalized convolution (`"nc"`: `NormalizedConv2D`, `"normprop"`:
    `NormPropConv2D`); weight-normalized norms wrap it in
    `WeightNormalization` named `f"{name}_wn"`; a norm with a normalization
    layer (`"bn"`, `"mobn"`, `"wn_mobn"`, `"gn"`, `"dwck"`...) adds it,
    named `f"{name}_{suffix}"` (`conv1_mobn`), with `norm_options` (e.g.
    `momentum`). A `Conv2D` has a bias unless that layer follows it directly,
    whose shift makes the bias redundant; a normalized convolution keeps its
    own bias (`NormalizedConv2D`) or offset (`NormPropConv2D`'s `beta`).

    Args:
        x: the input tensor, `(batch, height, width, channels)`.
        filters, kernel_size, strides, padding: the convolution's, as `Conv2D`.
        norm: a key of `keras_norms.norms.NORMS`.
        name: the convolution's name; the other layers' names extend it.
        kernel_initializer: the convolution's kernel initializer.
        conv_activation: an activation (a name) applied inside the
            convolution, before the normalization (ALL-CNN-C, NIN).
        activation: a Keras layer applied after the normalization, or None.
        norm_options: keyword arguments of the normalization layer.
        synchronized: passed to batch-statistics layers (`tf.distribute`).
        **conv_kwargs: further `Conv2D` arguments (e.g. `bias_initializer`).

    Returns:
        The output tensor.

    Raises:
        ValueError: for an unknown `norm`.
    """
    spec = get_norm(norm)
    if spec.convolution is None:
        convolution = keras.layers.Conv2D
        conv_kwargs["use_bias"] = spec.layer is None or conv_activation is not None
    else:  # a normalized convolution keeps its own bias or offset
        convolution = load(spec.convolution)
    conv = convolution(
        filters,
        kernel_size,
        strides,
        padding=padding,
        activation=conv_activation,
        kernel_initializer=kernel_initializer,
        name=name,
        **conv_kwargs,
    )
    x = weight_normalized(conv, norm, f"{name}_wn")(x)
    if spec.layer is not None:
        layer = normalization_layer(
            spec,
            filters,
            synchronized=synchronized,
            name=f"{name}_{spec.suffix}",
            **(norm_options or {}),
        )
        x = layer(x)
    if activation is not None:
        x = activation(x)
    return x
