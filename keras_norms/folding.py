"""Fold reparameterized and inference-mode normalization layers into plain layers.

For deployment, every layer that can say which plain layer it is at
inference (`plain_layer()`: weight normalization's `w = g * v / ||v||`,
Salimans & Kingma 2016, arXiv:1602.07868, eq. 2; NormProp's
`gamma W / ||W_i||` and post-activation shift, Arpit et al. 2016,
arXiv:1603.01431, eq. 9, 11) is replaced by it, and an inference-mode
normalization whose map is a per-channel affine `y = scale * x + shift`
(`inference_affine`: mean-only BN, `y = x - moving_mean + beta`; Keras
`BatchNormalization`, `y = gamma * (x - moving_mean) / sqrt(var + eps) + beta`;
the batch-statistics layers of this package) moves into the kernel and bias
of the linear layer it directly follows. The folded model costs what a
plain network costs. Every clone is float32, whatever dtype policy the model
was trained under (mixed precision keeps its variables in float32, so
nothing is lost).
"""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_norms.graph import is_model, iter_layers, normalization_pairs
from keras_norms.layers.batch_statistics import affine_from_statistics
from keras_norms.layers.kernels import DEPTHWISE_LAYERS, output_axes
from keras_norms.layers.linear import is_plain_linear
from keras_norms.policies import dtype_policy


@keras.saving.register_keras_serializable(package="keras_norms")
class FoldedNormalization(keras.layers.Layer):
    """Identity standing where a normalization was folded into its producer.

    Accepts the `training` and `mask` arguments that the replaced layer's
    call recorded in the functional graph.

    Call arguments:
        inputs: any tensor.
        training: ignored.
        mask: ignored.

    Input shape:
        Arbitrary; the output is the input, unchanged.
    """

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _numpy(variable):
    return ops.convert_to_numpy(variable).astype("float64")


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


def output_channel_axis(layer):
    """The channel axis of a foldable linear layer's output: -1, or 1 for channels first."""
    return -1 if getattr(layer, "data_format", "channels_last") == "channels_last" else 1


def is_mixed_precision(model):
    """Whether any layer of `model` computes in another dtype than its variables.

    Args:
        model: a `keras.Model`; nested models are searched.

    Returns:
        A bool.
    """
    return any(_computes_in_another_dtype(layer) for layer in iter_layers(model))


def _computes_in_another_dtype(layer):
    return layer.dtype_policy.compute_dtype != layer.dtype_policy.variable_dtype


def _layer_is_mixed(layer):
    """Whether `layer` or any layer it holds computes in another dtype than its variables."""
    return _computes_in_another_dtype(layer) or is_mixed_precision(layer)


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


def copy_weights(old, new):
    """Give the built layer `new` the weights of `old` (same type and config).

    An adapted preprocessing layer (Keras `Normalization`) is finalized
    after, as `adapt` does.
    """
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


def _plain_copy(layer, **overrides):
    """A new, unbuilt layer of `layer`'s type from its float32 config."""
    config = _float32_config(layer.get_config())
    config.update(overrides)
    return type(layer).from_config(config)


def as_float32(model):
    """A float32 copy of `model` (e.g. trained under `mixed_float16`), same weights.

    Export converts this, so the SavedModel and TFLite file compute in
    float32; export parity is measured against it.

    Args:
        model: a functional or sequential `keras.Model`.

    Returns:
        A new `keras.Model` whose layers have float32 policies where
        `model`'s had mixed ones, holding copies of `model`'s weights.
    """
    cloned, clones = _clone(model, _plain_copy)
    for old, new in clones:
        copy_weights(old, new)
    return cloned


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
    kernel = _numpy(layer.kernel)
    shape = [1] * kernel.ndim
    for axis in output_axes(layer, "kernel"):
        shape[axis] = kernel.shape[axis]
    scale, shift = affine
    bias = _numpy(layer.bias) if layer.use_bias else np.zeros(np.size(scale))
    kernel = kernel * np.reshape(scale, shape)
    return [kernel.astype("float32"), (bias * scale + shift).astype("float32")]


def fold(model):
    """An inference copy of `model` with its normalizations folded away.

    A generic walk over the layers of `model` and of the functional and
    sequential models nested in it (`keras.models.clone_model`, recursive):

    - a layer with a `plain_layer()` method (`WeightNormalization`: the
      wrapped type with kernel `g * v / ||v||`, Salimans & Kingma 2016,
      arXiv:1602.07868, eq. 2; `NormPropDense` / `NormPropConv2D`: a plain
      layer, or a `keras.Sequential` adding the activation and the constant
      post-activation shift, Arpit et al. 2016, arXiv:1603.01431, eq. 9,
      11) is replaced by that plain layer;
    - a linear layer (a plain Keras `Dense`, `Conv1D/2D/3D`,
      `Conv1D/2D/3DTranspose` or `DepthwiseConv1D/2D` without activation,
      `is_foldable_linear`, or a layer whose plain
      layer is one) whose only output is used only by a normalization with
      an inference affine map (`inference_affine`) on its channel axis
      (`keras_norms.graph.normalization_pairs`) gets that map folded into
      its kernel (along its output axis) and bias, and the normalization
      becomes a `FoldedNormalization` (identity);
    - every other layer is copied with its weights.

    Training-mode behaviour (batch statistics, data-dependent init) is not
    kept: the folded model is for inference.

    Args:
        model: a functional or sequential `keras.Model`.

    Returns:
        A new float32 `keras.Model` whose inference outputs equal `model`'s
        (float32 rounding aside; those of `as_float32(model)` for a model
        trained under mixed precision).

    Layers that `clone_model` copies whole (custom layers) are copied with
    their weights, and each layer inside them that can fold in place
    (`WeightNormalization.fold_in_place`) is folded there.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: from `keras.models.clone_model`, for a subclassed model
            (export one through `deployment_form`).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"fold expects a keras.Model. Received: model of type {type(model).__name__}"
        )
    # The layers clone_model visits; those inside custom layers are copied with them.
    layers = list(iter_layers(model, descend=is_model))
    with dtype_policy("float32"):
        plain = {
            id(layer): layer.plain_layer()
            for layer in layers
            if callable(getattr(layer, "plain_layer", None))
        }
    forms = {id(layer): plain.get(id(layer), layer) for layer in layers}
    pairs = normalization_pairs(
        model,
        [layer for layer in layers if is_foldable_linear(forms[id(layer)])],
        [layer for layer in layers if has_inference_affine(layer)],
        channel_axis=lambda layer: output_channel_axis(forms[id(layer)]),
    )
    folded_norms = {id(norm) for norm in pairs.values()}
    sources = {}  # id(new layer) -> the layer whose weights (folded or not) it takes

    def clone(layer):
        if id(layer) in folded_norms:
            return FoldedNormalization(name=layer.name)
        form = forms[id(layer)]
        if id(layer) in pairs:
            if form is not layer and form.use_bias and not _layer_is_mixed(form):
                new = form
            else:
                new = _plain_copy(form, name=layer.name, use_bias=True)
        elif form is not layer and not _layer_is_mixed(form):
            new = form  # a built plain layer, weights set
        else:
            new = _plain_copy(form)
        if new is not form or id(layer) in pairs:
            sources[id(new)] = (form, pairs.get(id(layer)))
        return new

    folded, clones = _clone(model, clone)
    for _, new in clones:
        if id(new) not in sources:
            continue
        form, norm = sources[id(new)]
        if norm is None:
            copy_weights(form, new)
        else:
            new.set_weights(folded_weights(form, inference_affine(norm)))
    _fold_in_place(folded)  # the layers inside the custom layers it copied
    return folded


def _fold_in_place(model):
    """Fold every built layer of `model`'s tree that folds in place; returns `[(layer, previous)]`.

    An unbuilt one (in a branch never called) has nothing to fold.
    """
    return [
        (layer, layer.fold_in_place())
        for layer in iter_layers(model)
        if layer.built and callable(getattr(layer, "fold_in_place", None))
    ]


def is_graph_model(model):
    """Whether `keras.models.clone_model` can copy `model`: functional or sequential."""
    from keras.src.models.functional import Functional  # Keras exports no public class

    return isinstance(model, (Functional, keras.Sequential))


@contextlib.contextmanager
def deployment_form(model):
    """The inference form of `model` to export, for the duration of a `with` block.

    A functional or sequential model gives `fold(model)`, a new model.
    A subclassed model, which `clone_model` cannot copy, gives the model
    itself with each layer that can fold in place folded
    (`WeightNormalization.fold_in_place`: its kernels hold `g * v / ||v||`),
    restored when the block ends, also on an error. Inference-mode
    normalizations of a subclassed model stay as they are (their inference
    map is already constant).

    Args:
        model: a built `keras.Model` of any kind.

    Yields:
        The model to export.
    """
    if is_graph_model(model):
        yield fold(model)
        return
    folded = _fold_in_place(model)
    try:
        yield model
    finally:
        for layer, previous in reversed(folded):
            layer.unfold(previous)
