"""Fold weight normalization and batch-statistics layers into plain layers.

For deployment, `w = g * v / ||v||` becomes a constant kernel, and an
inference-mode normalization that directly follows a linear layer
(`MeanOnlyBatchNormalization`: `y = x - moving_mean + beta`; Keras
`BatchNormalization`: `y = gamma * (x - moving_mean) / sqrt(var + eps) + beta`)
is a per-channel affine map `y = scale * x + shift` that moves into that
layer's kernel and bias. The folded model costs what a plain network costs.
"""

import keras
import numpy as np
from keras import ops

from keras_norms.data_init import iter_layers, single_producer
from keras_norms.layers import MeanOnlyBatchNormalization, WeightNormalization
from keras_norms.layers.weight_norm import CONV_TRANSPOSE_LAYERS, SUPPORTED_LAYERS

_AFFINE_NORMS = (MeanOnlyBatchNormalization, keras.layers.BatchNormalization)


@keras.saving.register_keras_serializable(package="keras_norms")
class FoldedNormalization(keras.layers.Layer):
    """Identity standing where a normalization was folded into its producer.

    Accepts the `training` and `mask` arguments that the replaced layer's
    call recorded in the functional graph.
    """

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _core(layer):
    """The plain linear layer behind `layer` (the wrapped one for WN)."""
    return layer.layer if isinstance(layer, WeightNormalization) else layer


def _is_linear(layer):
    core = _core(layer)
    return isinstance(core, SUPPORTED_LAYERS) and core.activation in (
        None,
        keras.activations.linear,
    )


def _channel_axis(layer):
    core = _core(layer)
    if isinstance(core, keras.layers.Dense) or core.data_format == "channels_last":
        return -1
    return 1


def _numpy(variable):
    return ops.convert_to_numpy(variable).astype("float64")


def inference_affine(norm):
    """`(scale, shift)` of an inference-mode MOBN or BN, float64 `(C,)`."""
    mean = _numpy(norm.moving_mean)
    beta = _numpy(norm.beta) if norm.center else np.zeros_like(mean)
    if isinstance(norm, MeanOnlyBatchNormalization):
        return np.ones_like(mean), beta - mean
    scale = 1.0 / np.sqrt(_numpy(norm.moving_variance) + norm.epsilon)
    if norm.scale:
        scale = scale * _numpy(norm.gamma)
    return scale, beta - mean * scale


def _foldable_pairs(model):
    """Map `id(linear layer)` to the MOBN/BN layer that follows it."""
    layers = list(iter_layers(model))
    linears = [layer for layer in layers if _is_linear(layer)]
    pairs = {}
    for norm in layers:
        if not isinstance(norm, _AFFINE_NORMS):
            continue
        producer = single_producer(norm, linears)
        if producer is None:
            continue
        rank = len(norm.input.shape)
        if norm.axis % rank == _channel_axis(producer) % rank:
            pairs[id(producer)] = norm
    return pairs


def _folded_weights(layer, norm):
    """Kernel and bias of `layer` (WN or plain) with `norm` folded in."""
    core = _core(layer)
    transpose = isinstance(core, CONV_TRANSPOSE_LAYERS)
    kernel = _numpy(layer.kernel)
    units = kernel.shape[-2 if transpose else -1]
    bias = _numpy(core.bias) if core.use_bias else np.zeros(units)
    if norm is not None:
        scale, shift = inference_affine(norm)
        kernel = kernel * scale.reshape((-1, 1) if transpose else (-1,))
        bias = bias * scale + shift
    return [kernel.astype("float32"), bias.astype("float32")]


def fold_normalization(model):
    """An inference copy of `model` with WN, MOBN and BN folded away.

    Every `WeightNormalization` becomes its wrapped layer type holding the
    kernel `g * v / ||v||`; every MOBN or BN whose input is the only output
    of a linear layer (Dense or convolution, no activation, WN or plain)
    becomes a `FoldedNormalization` (identity), its inference affine map folded into that layer's
    kernel and bias. Other layers are copied with their weights. Nested
    functional/sequential models are folded recursively.

    Args:
        model: a functional or sequential `keras.Model`.

    Returns:
        A new `keras.Model` whose inference outputs equal `model`'s
        (float32 rounding aside).
    """
    pairs = _foldable_pairs(model)
    folded_norms = {id(norm) for norm in pairs.values()}

    def clone(layer):
        if id(layer) in folded_norms:
            return FoldedNormalization(name=layer.name)
        if isinstance(layer, WeightNormalization) or id(layer) in pairs:
            config = _core(layer).get_config()
            config.update(name=layer.name, use_bias=True)
            return type(_core(layer)).from_config(config)
        return type(layer).from_config(layer.get_config())

    folded = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in zip(iter_layers(model), iter_layers(folded)):
        if isinstance(old, keras.Model) or id(old) in folded_norms:
            continue
        if isinstance(old, WeightNormalization) or id(old) in pairs:
            new.set_weights(_folded_weights(old, pairs.get(id(old))))
        else:
            new.set_weights(old.get_weights())
            if hasattr(new, "finalize_state"):  # adapted preprocessing layers
                new.finalize_state()
    return folded
