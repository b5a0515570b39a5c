"""PyTorch weights into Keras models: `load_torch_state_dict`.

A PyTorch model trained with weight normalization (HiFi-GAN, BigVGAN, TCNs)
stores each normalized weight as a magnitude `g` and a direction `v`, in one
of two formats: `<module>.weight_g` / `<module>.weight_v`
(`torch.nn.utils.weight_norm`) or `<module>.parametrizations.weight.original0`
/ `.original1` (`torch.nn.utils.parametrizations.weight_norm`); plain layers
store `<module>.weight`. Torch keeps kernels channels first: `Linear`
`(out, in)`, `Conv{1,2,3}d` `(out, in / groups, *k)`, `ConvTranspose{1,2,3}d`
`(in, out / groups, *k)`; Keras keeps them channels last: `Dense` `(in, out)`,
`Conv{1,2,3}D` `(*k, in / groups, out)`, `Conv{1,2,3}DTranspose` `(*k, out, in)`.
"""

import numpy as np

from keras_norms.graph import iter_layers
from keras_norms.layers.batch_statistics import BatchStatisticsNormalization
from keras_norms.layers.linear import is_plain_linear
from keras_norms.layers.weight_norm import WeightNormalization

_FORMATS = (
    # (suffix of g, suffix of v): the two weight-norm formats of PyTorch.
    ("parametrizations.weight.original0", "parametrizations.weight.original1"),
    ("weight_g", "weight_v"),
)


def _array(value):
    """A torch tensor (any device) or array-like as a float64 numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, "float64")


def _torch_modules(state_dict):
    """`[(prefix, weight entries)]` in the state_dict's order, one per module with a weight.

    Weight entries: `{"g": ..., "v": ...}` (weight-normalized) or
    `{"weight": ...}`, and `"bias"` where the module has one. Modules whose
    weight has one axis (BatchNorm, LayerNorm scales) are left out.
    """
    modules = {}
    for key, value in state_dict.items():
        for name in ("weight", "bias") + tuple(s for pair in _FORMATS for s in pair):
            if key == name or key.endswith("." + name):
                prefix = key[: -len(name)].rstrip(".")
                entry = modules.setdefault(prefix, {})
                role = {"weight": "weight", "bias": "bias"}.get(name)
                if role is None:
                    role = "g" if any(name == g for g, _ in _FORMATS) else "v"
                entry[role] = _array(value)
                break
    # Kernels have two axes or more; 1-D weights are norm layers' scales.
    return [
        (prefix, entry)
        for prefix, entry in modules.items()
        if "v" in entry or ("weight" in entry and entry["weight"].ndim >= 2)
    ]


def _torch_dim(g, v):
    """The axis of `v` that torch's weight norm kept (`dim`), or `None` for a whole-tensor norm."""
    kept = [axis for axis, size in enumerate(g.shape) if size != 1]
    if g.ndim == v.ndim and len(kept) == 1 and g.shape[kept[0]] == v.shape[kept[0]]:
        return kept[0]
    return None


def _effective_weight(entry):
    """The weight the torch module computes: `g * v / ||v||` (norm over all axes but `dim`)."""
    if "weight" in entry:
        return entry["weight"]
    g, v = entry["g"], entry["v"]
    dim = _torch_dim(g, v)
    axes = tuple(a for a in range(v.ndim) if a != dim)
    return (
        np.reshape(g, [-1 if a == dim else 1 for a in range(v.ndim)])
        * v
        / np.sqrt(np.sum(np.square(v), axis=axes, keepdims=True))
    )


def _to_keras_layout(weight):
    """Torch `(a, b, *k)` to Keras `(*k, b, a)`: every linear layer's permutation."""
    return np.transpose(weight, tuple(range(2, weight.ndim)) + (1, 0))


def _holds_no_user_kernels(layer):
    """Our layers whose sublayers are theirs: WN's wrapped layer, learned statistics' Conv1D."""
    return isinstance(layer, (WeightNormalization, BatchStatisticsNormalization))


def _keras_linears(model):
    """The linear layers of `model` in order: weight-normalized ones and plain ones."""
    return [
        layer
        for layer in iter_layers(model, descend=lambda layer: not _holds_no_user_kernels(layer))
        if isinstance(layer, WeightNormalization) or is_plain_linear(layer)
    ]


def _assign_kernel(layer, prefix, entry):
    core = layer.layer if isinstance(layer, WeightNormalization) else layer
    weight = _effective_weight(entry)
    kernel = _to_keras_layout(weight)
    expected = tuple(core.kernel.shape)
    if kernel.shape != expected:
        raise ValueError(
            f"load_torch_state_dict: {prefix!r} of shape {weight.shape} does not fit "
            f"{layer.name} (a {type(core).__name__} with kernel {expected}). "
            f"Received: torch weight shape {weight.shape}"
        )
    if not isinstance(layer, WeightNormalization):
        core.kernel.assign(kernel)
        return
    if not layer.use_scale:
        raise ValueError(
            f"load_torch_state_dict: {layer.name} is a WeightNormalization with "
            "use_scale=False, which computes v / ||v|| and cannot hold torch's weight "
            f"(its norm is not 1). Received: {prefix!r}"
        )
    norm_axes = layer.norm_axes()
    # Torch's norm over the same axes keeps its g and v; any other dim loads the weight it
    # computes, as v with g = ||v|| over our axes (the same function).
    if "v" in entry and _keras_norm_axes(entry) == norm_axes:
        v, g = _to_keras_layout(entry["v"]), entry["g"]
    else:
        v, g = kernel, np.sqrt(np.sum(np.square(kernel), axis=norm_axes))
    core.kernel.assign(v)
    g = np.reshape(g, layer.g.shape)
    layer.g.assign(np.log(g) if layer.log_scale else g)


def _keras_norm_axes(entry):
    """The Keras kernel axes that torch's weight norm of `entry` normalizes over."""
    ndim = entry["v"].ndim
    dim = _torch_dim(entry["g"], entry["v"])
    kept = () if dim is None else ({0: ndim - 1, 1: ndim - 2}.get(dim, dim - 2),)
    return tuple(a for a in range(ndim) if a not in kept)


def _assign_bias(layer, prefix, entry):
    core = layer.layer if isinstance(layer, WeightNormalization) else layer
    if ("bias" in entry) != bool(core.use_bias):
        raise ValueError(
            f"load_torch_state_dict: {prefix!r} {'has' if 'bias' in entry else 'has no'} bias "
            f"but {layer.name} {'has none' if 'bias' in entry else 'has one'}. "
            f"Received: keys for {prefix!r} with{'' if 'bias' in entry else 'out'} bias"
        )
    if "bias" in entry:
        core.bias.assign(entry["bias"])


def _pair_by_name(modules, layers):
    """`modules` and `layers` paired by name: torch's `ups.0` is Keras' `ups_0`."""
    by_name = {layer.name: layer for layer in layers}
    pairs = [
        (prefix, entry, by_name.pop(prefix.replace(".", "_"), None)) for prefix, entry in modules
    ]
    missing = [prefix for prefix, _, layer in pairs if layer is None]
    if missing or by_name:
        raise ValueError(
            "load_torch_state_dict(by_name=True): torch modules without a Keras layer of the "
            f"same name (dots as underscores): {missing[:6]}; Keras linear layers without a "
            f"torch module: {sorted(by_name)[:6]}. Received: {len(modules)} modules, "
            f"{len(layers)} layers"
        )
    return pairs


def _pair_by_order(modules, layers):
    if len(modules) != len(layers):
        raise ValueError(
            f"load_torch_state_dict: the state_dict has {len(modules)} modules with weights "
            f"({', '.join(p for p, _ in modules[:6])}{', ...' if len(modules) > 6 else ''}), "
            f"the model {len(layers)} linear layers. Received: {len(modules)} modules"
        )
    return [(prefix, entry, layer) for (prefix, entry), layer in zip(modules, layers)]


def load_torch_state_dict(model, state_dict, by_name=False):
    """Load a PyTorch state_dict's linear weights into `model`'s linear layers.

    The i-th torch module with a weight (in the state_dict's order) goes
    into the i-th linear layer of `model` (in `keras_norms.graph.iter_layers`
    order), or with `by_name=True` into the layer named as the module with
    dots as underscores (torch's `resblocks.0.convs1.2` into Keras'
    `resblocks_0_convs1_2`), for models whose layer order differs from
    torch's attribute order (a functional graph lists its layers by
    depth). Each linear layer is a `WeightNormalization` or a plain `Dense`, `Conv1D/2D/3D` or
    `Conv1D/2D/3DTranspose`, grouped ones included. Kernels are transposed
    from torch's layout to Keras' (see the module docstring); biases are
    copied. A weight-normalized torch module (either format) whose `dim`
    matches the `WeightNormalization`'s `axis` gives the Keras layer its `g`
    and `v`: per output feature is torch's `dim=0` (`dim=1` for a
    transposed convolution) and our default `axis="output"`; torch's
    default `dim=0` on a transposed convolution (per input channel) is our
    `axis=-1`, its `dim=2` on a `Conv1d` (wav2vec2) our `axis=0`, `dim=None`
    our `axis=None`. Any other pairing loads the weight torch computes,
    `w = g v / ||v||`, as `v` with `g = ||w||` under our axis: the same
    function, another parametrization. A plain Keras layer gets `w`. The
    model must be built.

    Args:
        model: a built `keras.Model` (any kind) with the same linear layers,
            in the same order, as the torch model.
        state_dict: `torch.nn.Module.state_dict()`, or any mapping of the
            same keys to arrays. Entries that are not kernels or their
            biases (norm layers' scales, running statistics) are ignored.
        by_name: pair modules and layers by name instead of by order.

    Returns:
        The list of `(torch module name, Keras layer)` pairs loaded.

    Raises:
        ValueError: if the counts of linear layers differ (by order), or
            a module or a layer has no partner (by name), or a weight's
            shape or a bias's presence does not fit its Keras layer (naming
            both).

    Examples:

    >>> import numpy as np, keras
    >>> from keras_norms.interop import load_torch_state_dict
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> weights = {"fc.weight": np.arange(6.0).reshape(2, 3), "fc.bias": np.ones(2)}
    >>> [name for name, _ in load_torch_state_dict(model, weights)]
    ['fc']
    >>> np.asarray(model.layers[0].kernel).tolist()
    [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    """
    modules = _torch_modules(state_dict)
    layers = _keras_linears(model)
    pairs = (_pair_by_name if by_name else _pair_by_order)(modules, layers)
    for layer in layers:
        if not layer.built:
            raise ValueError(
                f"load_torch_state_dict expects a built model; {layer.name} is not built. "
                "Received: an unbuilt layer (call the model once first)"
            )
    for prefix, entry, layer in pairs:
        _assign_kernel(layer, prefix, entry)
        _assign_bias(layer, prefix, entry)
    return [(prefix, layer) for prefix, _, layer in pairs]
