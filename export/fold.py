"""Fold weight normalization, batch-statistics and NormProp layers into plain layers.

For deployment, `w = g * v / ||v||` becomes a constant kernel, and an
inference-mode normalization that directly follows a linear layer
(`MeanOnlyBatchNormalization`: `y = x - moving_mean + beta`; Keras
`BatchNormalization`: `y = gamma * (x - moving_mean) / sqrt(var + eps) + beta`)
is a per-channel affine map `y = scale * x + shift` that moves into that
layer's kernel and bias. The folded model costs what a plain network costs. Every clone is float32,
whatever dtype policy the model was trained under (mixed precision keeps
its variables in float32, so nothing is lost).
"""

import keras
import numpy as np
from keras import ops

from keras_norms.data_init import iter_layers, single_producer
from keras_norms.layers import (
    MeanOnlyBatchNormalization,
    NormPropConv2D,
    NormPropDense,
    WeightNormalization,
)
from keras_norms.layers.normprop import PRELU
from keras_norms.layers.weight_norm import CONV_TRANSPOSE_LAYERS, SUPPORTED_LAYERS
from keras_norms.policies import dtype_policy

_AFFINE_NORMS = (MeanOnlyBatchNormalization, keras.layers.BatchNormalization)
_NORMPROP = (NormPropDense, NormPropConv2D)


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


def is_mixed_precision(model):
    """Whether any layer of `model` computes in another dtype than its variables."""
    return any(
        layer.dtype_policy.compute_dtype != layer.dtype_policy.variable_dtype
        for layer in iter_layers(model)
    )


def _float32_config(config):
    """`config` with every mixed-precision `dtype` entry (nested ones too) set to float32."""
    if isinstance(config, list):
        return [_float32_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    result = {key: _float32_config(value) for key, value in config.items()}
    policy = config.get("dtype")
    name = policy.get("config", {}).get("name") if isinstance(policy, dict) else policy
    if isinstance(name, str) and name.startswith("mixed_"):
        result["dtype"] = "float32"
    return result


def _copy_weights(old, new):
    new.set_weights(old.get_weights())
    if hasattr(new, "finalize_state"):  # adapted preprocessing layers
        new.finalize_state()


def _clone(model, clone_function):
    """`clone_model(recursive=True)` in float32; returns the model and (old, new) pairs."""
    clones = []

    def record(layer):
        new = clone_function(layer)
        clones.append((layer, new))
        return new

    with dtype_policy("float32"):  # sublayers built later default to float32 too
        cloned = keras.models.clone_model(model, clone_function=record, recursive=True)
    return cloned, clones


def _plain_copy(layer):
    return type(layer).from_config(_float32_config(layer.get_config()))


def as_float32(model):
    """A float32 copy of `model` (e.g. trained under `mixed_float16`), same weights.

    Export converts this, so the SavedModel and TFLite file compute in
    float32; export parity is measured against it.
    """
    cloned, clones = _clone(model, _plain_copy)
    for old, new in clones:
        _copy_weights(old, new)
    return cloned


def _normprop_replacement(layer):
    """Plain layer + activation + `Rescaling(1/c1, -c2/c1)` for a NormProp layer."""
    prelu = layer.activation == PRELU
    activation = None if prelu else layer.activation
    if isinstance(layer, NormPropConv2D):
        core = keras.layers.Conv2D(
            layer.filters, layer.kernel_size, layer.strides, layer.padding,
            layer.data_format, activation=activation, name=f"{layer.name}_conv",
        )
    else:
        core = keras.layers.Dense(layer.units, activation=activation, name=f"{layer.name}_dense")
    if layer.activation is None:
        core.name = layer.name
        return core
    parts = [core]
    if prelu:
        rank = len(layer.output.shape)
        channel = layer._channel_axis % rank
        shared = [axis for axis in range(1, rank) if axis != channel]
        parts.append(keras.layers.PReLU(shared_axes=shared or None, name=f"{layer.name}_prelu"))
    c2, c1 = (np.asarray(ops.convert_to_numpy(m), "float64") for m in layer.post_activation_moments())
    parts.append(keras.layers.Rescaling(1.0 / c1, -c2 / c1, name=f"{layer.name}_shift"))
    return keras.Sequential(parts, name=layer.name)


def _set_normprop_weights(old, new):
    parts = new.layers if isinstance(new, keras.Sequential) else [new]
    kernel = ops.convert_to_numpy(old.normalized_kernel())
    parts[0].set_weights([kernel, ops.convert_to_numpy(old.beta)])
    if old.alpha is not None:
        prelu = parts[1]
        prelu.set_weights([np.reshape(ops.convert_to_numpy(old.alpha), prelu.alpha.shape)])


def fold_normalization(model):
    """An inference copy of `model` with WN, MOBN, BN and NormProp folded away.

    Every `WeightNormalization` becomes its wrapped layer type holding the
    kernel `g * v / ||v||`; every MOBN or BN whose input is the only output
    of a linear layer (Dense or convolution, no activation, WN or plain)
    becomes a `FoldedNormalization` (identity), its inference affine map
    folded into that layer's kernel and bias. Every `NormPropDense` /
    `NormPropConv2D` becomes a plain `Dense` / `Conv2D` with kernel
    `gamma W / ||W_i||` and bias `beta`, its activation (a `PReLU` layer for
    `"prelu"`), and `Rescaling(1/c1, -c2/c1)` for the constant
    post-activation shift (Arpit et al. 2016, eq. 9, 11). Other layers are
    copied with their weights. Nested functional/sequential models are
    folded recursively.

    Args:
        model: a functional or sequential `keras.Model`.

    Returns:
        A new float32 `keras.Model` whose inference outputs equal `model`'s
        (float32 rounding aside; those of `as_float32(model)` for a model
        trained under mixed precision).
    """
    pairs = _foldable_pairs(model)
    folded_norms = {id(norm) for norm in pairs.values()}

    def clone(layer):
        if id(layer) in folded_norms:
            return FoldedNormalization(name=layer.name)
        if isinstance(layer, _NORMPROP):
            return _normprop_replacement(layer)
        if isinstance(layer, WeightNormalization) or id(layer) in pairs:
            config = _float32_config(_core(layer).get_config())
            config.update(name=layer.name, use_bias=True)
            return type(_core(layer)).from_config(config)
        return _plain_copy(layer)

    folded, clones = _clone(model, clone)
    for old, new in clones:
        if id(old) in folded_norms:
            continue
        if isinstance(old, _NORMPROP):
            _set_normprop_weights(old, new)
        elif isinstance(old, WeightNormalization) or id(old) in pairs:
            new.set_weights(_folded_weights(old, pairs.get(id(old))))
        else:
            _copy_weights(old, new)
    return folded
