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
nothing is lost). A grouped convolution is deployed as its groups'
convolutions on channel slices and a concatenation (`split_groups`).
"""

import contextlib

import keras

# batch_normalization_affine, copy_weights and output_channel_axis moved to
# keras_norms.affine, keras_norms.graph and keras_norms.layers.linear; they stay
# importable from here for one release.
from keras_norms.affine import (
    batch_normalization_affine,  # noqa: F401
    folded_weights,
    has_inference_affine,
    inference_affine,
    is_foldable_linear,
)
from keras_norms.graph import (
    copy_layer,
    copy_weights,  # noqa: F401
    is_graph_model,
    is_model,
    iter_layers,
    normalization_pairs,
    rebuild,
    swap_held_layers,
)
from keras_norms.layers.linear import channel_axis
from keras_norms.policies import dtype_policy

output_channel_axis = channel_axis


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
    return rebuild(model, float32=True)


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
    # The layers rebuild visits; those inside custom layers are copied with them.
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
    )
    folded_norms = {id(norm) for norm in pairs.values()}

    def replace(layer):
        if id(layer) in folded_norms:
            return FoldedNormalization(name=layer.name)
        form = forms[id(layer)]
        if id(layer) in pairs:
            weights = folded_weights(form, inference_affine(pairs[id(layer)]))
            if form is not layer and form.use_bias and not _layer_is_mixed(form):
                return form, weights
            return copy_layer(form, float32=True, name=layer.name, use_bias=True), weights
        if form is layer:
            return None  # copied with its weights
        if _layer_is_mixed(form):
            return copy_layer(form, float32=True), form.get_weights()
        return form  # a built plain layer, weights set

    folded = rebuild(model, replace, float32=True)
    _fold_in_place(folded)  # the layers inside the custom layers it copied
    if any(_is_grouped(layer) for layer in iter_layers(folded, descend=is_model)):
        folded = rebuild(
            folded, lambda layer: split_groups(layer) if _is_grouped(layer) else None, True
        )
    return folded


_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _is_grouped(layer):
    return isinstance(layer, _CONVOLUTIONS) and layer.groups > 1


def split_groups(convolution):
    """The deployment form of a built grouped convolution: its groups' convolutions and a
    concatenation, the same outputs.

    Keras' TensorFlow backend runs a convolution with `groups > 1` as an
    XLA-compiled function, which tf2onnx cannot convert (the ONNX file
    holds a `StatefulPartitionedCall` that onnxruntime refuses). Here the
    input's channels are split into `groups` slices (`keras.ops.split`),
    each goes through a plain convolution holding its group's kernel slice
    and bias (the same config otherwise, activation included), and the
    outputs are concatenated on the channel axis: operations every
    exporter converts.

    Args:
        convolution: a built Keras `Conv1D`, `Conv2D` or `Conv3D` with
            `groups > 1`.

    Returns:
        A functional `keras.Model` named as `convolution`, float32.
    """
    groups = convolution.groups
    per_group = convolution.filters // groups
    axis = -1 if convolution.data_format == "channels_last" else 1
    input_shape = tuple(convolution.get_build_config()["input_shape"])
    kernel = keras.ops.convert_to_numpy(convolution.kernel)
    bias = keras.ops.convert_to_numpy(convolution.bias) if convolution.use_bias else None
    with dtype_policy("float32"):
        inputs = keras.Input(shape=input_shape[1:])
        outputs = []
        for group, part in enumerate(keras.ops.split(inputs, groups, axis=axis)):
            layer = copy_layer(
                convolution,
                float32=True,
                groups=1,
                filters=per_group,
                name=f"{convolution.name}_group{group}",
            )
            outputs.append(layer(part))
            rows = slice(group * per_group, (group + 1) * per_group)
            layer.set_weights([kernel[..., rows]] + ([] if bias is None else [bias[rows]]))
        concatenated = keras.layers.Concatenate(axis=axis)(outputs)
    return keras.Model(inputs, concatenated, name=convolution.name)


def _fold_in_place(model):
    """Fold every built layer of `model`'s tree that folds in place; returns `[(layer, previous)]`.

    An unbuilt one (in a branch never called) has nothing to fold.
    """
    return [
        (layer, layer.fold_in_place())
        for layer in iter_layers(model)
        if layer.built and callable(getattr(layer, "fold_in_place", None))
    ]


@contextlib.contextmanager
def deployment_form(model):
    """The inference form of `model` to export, for the duration of a `with` block.

    A functional or sequential model gives `fold(model)`, a new model.
    A subclassed model, which `clone_model` cannot copy, gives the model
    itself with each layer that can fold in place folded
    (`WeightNormalization.fold_in_place`: its kernels hold `g * v / ||v||`)
    and each grouped convolution it holds swapped for `split_groups` of it
    (`keras_norms.graph.swap_held_layers`), restored when the block ends,
    also on an error. Inference-mode
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
    grouped = [layer for layer in iter_layers(model) if layer.built and _is_grouped(layer)]
    split = {id(layer): split_groups(layer) for layer in grouped}
    try:
        swap_held_layers(model, split)
        yield model
    finally:
        swap_held_layers(model, {id(split[id(layer)]): layer for layer in grouped})
        for layer, previous in reversed(folded):
            layer.unfold(previous)
