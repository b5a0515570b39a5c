"""Facts about Keras' linear layers, in one place.

A linear layer computes `activation(x . kernel + bias)` from its own `kernel`
and `bias` variables: `keras.layers.Dense` and the convolutions
`Conv1D/2D/3D` and `Conv1D/2D/3DTranspose` (subclasses included, unless they
are marked `NormalizedLinear`). `WeightNormalization` wraps them, and a
deployment fold can merge a following per-channel affine map into their
kernel and bias; both need to know along which kernel axis the output
features lie, and every rewrite which input/output axis holds the channels.
"""

import keras

_TRANSPOSED = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)

# The layer types whose output is `activation(x . kernel + bias)`.
LINEAR_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
) + _TRANSPOSED


class NormalizedLinear:
    """Marks a subclass of a `LINEAR_LAYERS` type that is not linear in its variables.

    Such a layer (`NormPropConv2D`, `NormalizedConv2D`) inherits Keras'
    argument handling but normalizes its kernel or its input patches, so its
    output is not `activation(x . kernel + bias)` of its own `kernel` and
    `bias`: `is_plain_linear` is `False` for it, `WeightNormalization` does not
    wrap it and nothing may be folded into its kernel.
    """


def is_plain_linear(layer):
    """Whether `layer` computes `activation(x . kernel + bias)` from its own variables.

    True for instances of `LINEAR_LAYERS` (subclasses included) that are not
    `NormalizedLinear`.
    """
    return isinstance(layer, LINEAR_LAYERS) and not isinstance(layer, NormalizedLinear)


def _check(layer, function):
    if not isinstance(layer, LINEAR_LAYERS):
        raise TypeError(
            f"{function} expects a Dense, Conv1D/2D/3D or Conv1D/2D/3DTranspose layer. "
            f"Received: layer={layer!r} of type {type(layer).__name__}"
        )


def kernel_output_axis(layer):
    """The kernel axis of the output features: `-1`, or `-2` for a transposed convolution.

    A `Dense` kernel is `(in, units)`, a convolution kernel
    `(*kernel_size, in / groups, filters)`, a transposed-convolution kernel
    `(*kernel_size, filters, in)`.

    Raises:
        TypeError: if `layer` is not an instance of a `LINEAR_LAYERS` type.
    """
    _check(layer, "kernel_output_axis")
    return -2 if isinstance(layer, _TRANSPOSED) else -1


def channel_axis(layer):
    """The channel axis of a layer's inputs and outputs: `-1`, or `1` for channels first.

    The one place that says where a layer's channels lie: `1` where the
    layer (or, for a `keras.layers.Wrapper` such as `WeightNormalization`
    or `TimeDistributed`, the layer it wraps) has
    `data_format="channels_first"`, else `-1` (`Dense`, `EinsumDense`,
    recurrent layers and every channels-last layer).

    Args:
        layer: any Keras layer.

    Returns:
        `-1` or `1`.
    """
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return 1 if getattr(layer, "data_format", None) == "channels_first" else -1
