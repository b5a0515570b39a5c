"""Inference-affine algebra: a normalization's per-channel affine map and folding it.

An inference-mode normalization whose map is a per-channel affine
`y = scale * x + shift` (mean-only BN, `y = x - moving_mean + beta`; Keras
`BatchNormalization`, `y = gamma * (x - moving_mean) / sqrt(var + eps) +
beta`; the batch-statistics layers of this package) can move into the
kernel and bias of a linear layer it directly follows:
`(x . kernel + bias) * scale + shift = x . (kernel * scale) + (bias * scale + shift)`.
`fold` uses this for deployment, `replace_normalization` to keep a trained
model's inference map. Which axis holds the channels is
`keras_norms.layers.linear.channel_axis`.
"""

import keras
import numpy as np

from keras_norms.layers.batch_statistics import affine_from_statistics, as_float64
from keras_norms.layers.kernels import DEPTHWISE_LAYERS, output_axes
from keras_norms.layers.linear import is_plain_linear


def batch_normalization_affine(layer):
    """`(scale, shift)` of an inference-mode Keras `BatchNormalization`.

    `scale = gamma / sqrt(moving_variance + epsilon)` and
    `shift = beta - moving_mean * scale` (no `gamma` / `beta` when `scale` /
    `center` is off), read from the layer's public attributes.

    Args:
        layer: a built `keras.layers.BatchNormalization`.

    Returns:
        Two float64 numpy arrays of shape `(C,)`: the inference output is
        `x * scale + shift` along `layer.axis`.
    """
    return affine_from_statistics(
        layer.moving_mean,
        layer.moving_variance,
        layer.epsilon,
        layer.gamma if layer.scale else None,
        layer.beta if layer.center else None,
    )


def has_inference_affine(layer):
    """Whether `inference_affine(layer)` applies: our normalizations, Keras BN."""
    return callable(getattr(layer, "inference_affine", None)) or (
        type(layer) is keras.layers.BatchNormalization
    )


def inference_affine(layer):
    """`(scale, shift)` of an inference-mode normalization, float64 `(C,)` each.

    The layer's own `inference_affine()` (mean-only BN, DWCK and learned
    statistics normalization), or `batch_normalization_affine` for Keras
    `BatchNormalization` (exactly that class: a subclass may compute
    something else). The inference output is `x * scale + shift` along
    `layer.axis`.

    Args:
        layer: a built normalization layer.

    Returns:
        Two float64 numpy arrays of shape `(C,)`.

    Raises:
        TypeError: if the layer has no inference affine map.
    """
    if callable(getattr(layer, "inference_affine", None)):
        return layer.inference_affine()
    if type(layer) is keras.layers.BatchNormalization:
        return batch_normalization_affine(layer)
    raise TypeError(
        "inference_affine expects a normalization layer with an inference "
        "affine map (an `inference_affine()` method, or Keras "
        f"BatchNormalization). Received: layer of type {type(layer).__name__}"
    )


def is_foldable_linear(layer):
    """Whether a per-channel affine map after `layer` folds into its kernel and bias.

    True for a plain Dense, convolution or transposed convolution
    (`is_plain_linear`) and for a depthwise convolution, without activation.
    """
    linear = is_plain_linear(layer) or isinstance(layer, DEPTHWISE_LAYERS)
    return linear and layer.activation in (None, keras.activations.linear)


def folded_weights(layer, affine):
    """Kernel and bias of `layer` with a following per-channel affine map folded in.

    `y = (x . kernel + bias) * scale + shift` is `x . (kernel * scale) +
    (bias * scale + shift)`, `scale` broadcast along the kernel's output
    feature axes (`keras_norms.layers.kernels.output_axes`: the last axis,
    the next to last of a transposed convolution, `(in, multiplier)` of a
    depthwise one, whose output channel `i * multiplier + m` is flattened
    in that order).

    Args:
        layer: a built plain linear layer (Dense, convolution, transposed or
            depthwise convolution) with a `kernel` and, if `use_bias`, a `bias`.
        affine: `(scale, shift)`, numpy arrays of shape `(C,)` for the
            layer's `C` output channels.

    Returns:
        `[kernel, bias]`, float32 numpy arrays.
    """
    kernel = as_float64(layer.kernel)
    shape = [1] * kernel.ndim
    for axis in output_axes(layer, "kernel"):
        shape[axis] = kernel.shape[axis]
    scale, shift = affine
    bias = as_float64(layer.bias) if layer.use_bias else np.zeros(np.size(scale))
    kernel = kernel * np.reshape(scale, shape)
    return [kernel.astype("float32"), (bias * scale + shift).astype("float32")]
