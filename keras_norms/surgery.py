"""Normalization surgery: swap the normalizations of an existing model for another norm.

`replace_normalization(model, "gn")` returns a copy of a functional or
Sequential model (nested ones included: `keras.applications`, keras-hub
backbones, your own) in which every `BatchNormalization` is a
`GroupNormalization`, or any other target of `TARGETS`, with the weights
that still apply carried over, and a report of what was replaced and what
could not be, and why. A subclassed model, which has no graph to copy, is
converted in place wherever its layers hold a normalization (as timm
converts a module tree). PyTorch users have timm's `convert_sync_batchnorm`
and `freeze_batch_norm_2d` for this; `keras.models.clone_model` alone
replays each normalization's recorded call arguments (`mask`, `training`),
which most other norms do not take.

Where the inference function can be kept, it is: a trained convolution
followed by batch normalization becomes a weight-normalized convolution
holding the folded kernel `w * scale` and bias `b * scale + shift` with
`g = ||w * scale||` (Salimans & Kingma 2016, arXiv:1602.07868, eq. 2), the
same outputs. Each replacement reports whether the new model's inference
map at that place equals the old one, compared numerically from the
weights, not assumed.
"""

import dataclasses
import inspect
import warnings

import keras
import numpy as np
from keras import ops

from keras_norms.affine import (
    folded_weights,
    has_inference_affine,
    inference_affine,
    is_foldable_linear,
)
from keras_norms.data_init import data_dependent_init
from keras_norms.graph import (
    REMOVE,
    copy_layer,
    is_graph_model,
    is_model,
    iter_layers,
    normalization_pairs,
    rebuild,
    swap_held_layers,
)
from keras_norms.layers import NormalizedConv2D, WeightNormalization
from keras_norms.layers.batch_statistics import as_float64
from keras_norms.layers.linear import is_plain_linear
from keras_norms.norms import NORMS, check_backend, create_norm_layer

# The norm registry's entries that can take a batch normalization's place.
TARGETS = tuple(name for name, norm in NORMS.items() if norm.surgery)
# The targets that replace the normalization and the linear layer before it.
KERNEL_TARGETS = tuple(name for name in TARGETS if NORMS[name].replaces_linear)
# Weights another normalization takes from the replaced one when name and shape agree.
CARRIED_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")
# Relative difference of folded kernels and biases below which a replacement is exact.
EXACT_TOLERANCE = 1e-5
# Why a normalization inside a wrapper or custom layer stays.
_HELD = (
    "held inside another layer (a wrapper such as TimeDistributed, or a custom layer), "
    "which is copied whole"
)
_UNREACHABLE = (
    "held where no attribute of a layer shows it (e.g. inside a plain Python object), so "
    "it could not be swapped"
)


@dataclasses.dataclass(frozen=True)
class Replacement:
    """One replaced normalization.

    Attributes:
        layer: the replaced layer's name.
        new: what stands in its place, e.g. `"GroupNormalization"` or
            `"WeightNormalization(Conv2D conv1) folded, normalization removed"`.
        exact: whether the inference map there is unchanged (weights compared).
        carried: names of the weights carried over from the replaced layer.
    """

    layer: str
    new: str
    exact: bool
    carried: tuple = ()


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A normalization left as it was, and why."""

    layer: str
    reason: str


@dataclasses.dataclass(frozen=True)
class ReplacementReport:
    """What `replace_normalization` did.

    Attributes:
        target: the target norm.
        replaced: a tuple of `Replacement`.
        refused: a tuple of `Refusal` (those layers are kept as they were).
        params_before: `count_params()` of the given model.
        params_after: `count_params()` of the new model.
    """

    target: str
    replaced: tuple
    refused: tuple
    params_before: int
    params_after: int

    @property
    def exact(self):
        """Whether every normalization was replaced and the inference map is unchanged."""
        return not self.refused and all(r.exact for r in self.replaced)

    def __str__(self):
        exact = sum(r.exact for r in self.replaced)
        lines = [
            f"{self.target}: {len(self.replaced)} replaced ({exact} exact), "
            f"{len(self.refused)} kept; parameters {self.params_before} -> {self.params_after}"
        ]
        lines += [f"  {r.layer}: {r.new}{' (exact)' if r.exact else ''}" for r in self.replaced]
        lines += [f"  {r.layer}: kept: {r.reason}" for r in self.refused]
        return "\n".join(lines)


class _Refused(Exception):
    """A normalization that cannot be replaced by the target; the message says why."""


def _check_arguments(model, target, source):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"replace_normalization expects a keras.Model. Received: model of type "
            f"{type(model).__name__}"
        )
    if not isinstance(target, str) or target not in TARGETS:
        raise ValueError(
            f"replace_normalization expects target in {TARGETS}. Received: target={target!r}"
        )
    check_backend(NORMS[target], "replace_normalization")
    if not is_graph_model(model) and target in KERNEL_TARGETS:
        raise ValueError(
            f"replace_normalization on a subclassed model replaces normalization layers alone "
            f"(targets {tuple(t for t in TARGETS if t not in KERNEL_TARGETS)}); target "
            f"{target!r} changes the layer that feeds each normalization, which takes the "
            "model's graph: build the model functionally, or wrap its layers in its own code. "
            f"Received: target={target!r} for model {model.name} of type {type(model).__name__}"
        )
    if not model.built or (is_graph_model(model) and not model.inputs):
        raise ValueError(
            "replace_normalization expects a built model (call a subclassed model once; give "
            "a Sequential model a keras.Input). "
            f"Received: model {model.name} with built={model.built}"
        )
    classes = source if isinstance(source, tuple) else (source,)
    if not all(inspect.isclass(c) and issubclass(c, keras.layers.Layer) for c in classes):
        raise TypeError(
            "replace_normalization expects source to be a Keras layer class or a tuple of "
            f"them. Received: source={source!r}"
        )


def _built(layer, input_shape):
    """`layer` built on `input_shape`; a build error refuses the replacement."""
    try:
        layer.build(input_shape)
    except (ValueError, TypeError) as error:
        raise _Refused(
            f"{type(layer).__name__} cannot take its input of shape {tuple(input_shape)}: {error}"
        ) from error
    return layer


def _input_shape(layer):
    """The input shape `layer` was built on (its first call's), also for a layer that a
    subclassed model holds, which has no recorded call."""
    return tuple((layer.get_build_config() or {})["input_shape"])


def _names(layer):
    """The names of `layer`'s weights (all of them go into a folded replacement)."""
    return tuple(weight.name for weight in layer.weights)


def _carry(old, new):
    """Copy `CARRIED_WEIGHTS` of `old` into `new` where name and shape agree; their names."""
    weights = {w.name: w for w in old.weights}
    carried = []
    for weight in new.weights:
        source = weights.get(weight.name)
        if weight.name in CARRIED_WEIGHTS and source is not None:
            if tuple(source.shape) == tuple(weight.shape):
                weight.assign(ops.convert_to_numpy(source))
                carried.append(weight.name)
    return tuple(carried)


def _new_norm(target, old):
    arguments = NORMS[target].batch_norm_arguments
    kwargs = {a: getattr(old, a) for a in arguments if hasattr(old, a)}
    channels = int(_input_shape(old)[getattr(old, "axis", -1)])
    return create_norm_layer(
        target,
        channels,
        synchronized=getattr(old, "synchronized", False),
        name=old.name,
        dtype=old.dtype_policy,
        **kwargs,
    )


def _composed(linear, norm):
    """Folded `[kernel, bias]` of `linear` then `norm` (either may be None), float64."""
    if linear is None:
        return list(inference_affine(norm))
    if isinstance(linear, WeightNormalization):
        linear = linear.plain_layer()
    if norm is None:  # the linear layer alone: a plain layer with a bias (`plain_layer`)
        scale = np.ones(int(linear.bias.shape[0]))
        affine = (scale, np.zeros_like(scale))
    else:
        affine = inference_affine(norm)
    return folded_weights(linear, affine)


def _same_inference(old, new):
    """Whether `(linear, norm)` pairs `old` and `new` compute the same inference map."""
    _, new_norm = new
    if new_norm is not None and not has_inference_affine(new_norm):
        return False
    if isinstance(new[0], NormalizedConv2D):
        return False
    for before, after in zip(_composed(*old), _composed(*new)):
        before, after = np.asarray(before, "float64"), np.asarray(after, "float64")
        if before.shape != after.shape:
            return False
        scale = max(np.max(np.abs(before)), 1e-12)
        if np.max(np.abs(before - after)) > EXACT_TOLERANCE * scale:
            return False
    return True


class _Plan:
    """The new layers, by the id of the layer each takes the place of."""

    def __init__(self):
        self.new = {}  # id(old layer) -> new layer, built, weights set
        self.dropped = set()  # ids of the old normalizations removed from the graph

    def replace(self, layer):
        """The `keras_norms.graph.rebuild` choice for `layer`: new, removed or copied."""
        if id(layer) in self.dropped:
            return REMOVE
        return self.new.get(id(layer))

    def weight_normalized(self):
        """The `WeightNormalization` layers the plan creates."""
        return [layer for layer in self.new.values() if isinstance(layer, WeightNormalization)]


def _fold_into(linear, affine, *, weight_normalized, use_bias):
    """A new copy of `linear` holding `linear` then `affine` (bias dropped if not `use_bias`)."""
    overrides = {"use_bias": use_bias}
    copy = _built(copy_layer(linear, **overrides), _input_shape(linear))
    kernel, bias = folded_weights(linear, affine)
    copy.set_weights([kernel, bias] if use_bias else [kernel])
    if not weight_normalized:
        return copy
    # g starts as ||v|| of the folded kernel: the wrapped layer's outputs are unchanged.
    wrapper = WeightNormalization(copy, name=linear.name, dtype=linear.dtype_policy)
    wrapper.build(_input_shape(linear))
    wrapper.initialized.assign(True)
    return wrapper


def _mean_only_after(linear, old, bias_removed):
    """MOBN whose inference map after `linear * scale` (bias removed or kept) equals `old`'s.

    `y = x - m + beta` after `(W x + b) * scale` (or `W x * scale` when `b`
    moved): the running mean `m = (mean - b_moved) * scale` is the linear
    output's, and `beta = mean * scale + shift`.
    """
    scale, shift = inference_affine(old)
    mean = as_float64(old.moving_mean) if hasattr(old, "moving_mean") else np.zeros_like(scale)
    moved = as_float64(linear.bias) if bias_removed and linear.use_bias else np.zeros_like(scale)
    mobn = _built(_new_norm("mobn", old), _input_shape(old))
    mobn.moving_mean.assign((mean - moved) * scale)
    mobn.beta.assign(mean * scale + shift)
    return mobn


def _replace_norm(target, old, linear, plan):
    """A norm target in place of `old`; MOBN after a linear layer keeps the inference map."""
    if target == "mobn" and linear is not None and has_inference_affine(old):
        scale, _ = inference_affine(old)
        plan.new[id(linear)] = new_linear = _fold_into(
            linear, (scale, np.zeros_like(scale)), weight_normalized=False, use_bias=linear.use_bias
        )
        plan.new[id(old)] = new = _mean_only_after(linear, old, bias_removed=False)
        exact = _same_inference((linear, old), (new_linear, new))
        return Replacement(
            old.name, f"{type(new).__name__}, scale folded into {linear.name}", exact, _names(old)
        )
    new = _built(_new_norm(target, old), _input_shape(old))
    carried = _carry(old, new)
    plan.new[id(old)] = new
    exact = has_inference_affine(old) and _same_inference((None, old), (None, new))
    return Replacement(old.name, type(new).__name__, exact, carried)


def _linear_for(target, old, linear):
    """The linear layer a kernel target replaces with `old`, or `_Refused`."""
    if not has_inference_affine(old):
        raise _Refused(
            f"{target} folds the normalization's inference map into the layer before it, and "
            f"{type(old).__name__} has no per-channel affine inference map"
        )
    if linear is None:
        raise _Refused(
            f"{target} replaces a Dense or convolution followed by the normalization, and no "
            "linear layer without activation feeds it alone (another layer kind comes first, "
            "or its input has other consumers)"
        )
    if target == "nc" and not (isinstance(linear, keras.layers.Conv2D) and is_plain_linear(linear)):
        raise _Refused(
            f"nc replaces a Conv2D followed by the normalization, and {linear.name} is a "
            f"{type(linear).__name__}"
        )
    return linear


def _replace_kernel(target, old, linear, plan):
    """`wn`, `wn_mobn` or `nc` in place of `linear` followed by `old`."""
    linear = _linear_for(target, old, linear)
    affine = inference_affine(old)
    if target == "nc":
        config = {**linear.get_config(), "use_bias": True}
        new_linear = _built(NormalizedConv2D.from_config(config), _input_shape(linear))
        bias = as_float64(linear.bias) if linear.use_bias else np.zeros(linear.filters)
        new_linear.set_weights([as_float64(linear.kernel), bias])
        plan.new[id(linear)] = new_linear
        plan.dropped.add(id(old))
        return Replacement(
            old.name, f"NormalizedConv2D {linear.name}, normalization removed", False
        )
    try:
        if target == "wn":
            new_linear = _fold_into(linear, affine, weight_normalized=True, use_bias=True)
            new_norm = None
        else:
            scale, _ = affine
            new_linear = _fold_into(
                linear, (scale, np.zeros_like(scale)), weight_normalized=True, use_bias=False
            )
            new_norm = _mean_only_after(linear, old, bias_removed=True)
    except ValueError as error:  # WeightNormalization refuses the layer
        raise _Refused(str(error)) from error
    plan.new[id(linear)] = new_linear
    if new_norm is None:
        plan.dropped.add(id(old))
        new = f"WeightNormalization({type(linear).__name__} {linear.name}), normalization folded"
    else:
        plan.new[id(old)] = new_norm
        new = f"WeightNormalization({type(linear).__name__} {linear.name}) + mean-only BN"
    exact = _same_inference((linear, old), (new_linear, new_norm))
    return Replacement(old.name, new, exact, _names(old))


def replace_normalization(model, target, source=keras.layers.BatchNormalization, x_init=None):
    """A copy of `model` with each `source` normalization replaced by the `target` norm.

    Targets (`TARGETS`):

    - `"sync_bn"`: Keras `BatchNormalization(synchronized=True)` with every weight carried
      (the same inference map; timm's `convert_sync_batchnorm`): batch statistics
      all-reduced over `tf.distribute` replicas. TensorFlow only, where Keras implements
      it (under `keras.distribution` on JAX the statistics are the global batch's already).
    - `"mobn"`, `"gn"`, `"ln"`, `"dwck"`, `"dwck_weighted"`, `"learned"`: the registered norm
      (`keras_norms.create_norm_layer`) takes the normalization's place, with
      its `axis`, `momentum`, `epsilon` and `synchronized` where it has them,
      and the weights among `gamma`, `beta`, `moving_mean`,
      `moving_variance` that it has (`CARRIED_WEIGHTS`). DWCK then has batch
      normalization's inference map exactly. Mean-only BN after a linear
      layer (Dense, convolution, depthwise convolution) gets batch
      normalization's `scale = gamma / sqrt(var + eps)` folded into that
      layer's kernel and bias, so its inference map is kept too
      (Salimans & Kingma 2016, arXiv:1602.07868, section 4).
    - `"wn"`: the linear layer feeding a normalization alone becomes a
      `WeightNormalization` of it holding the folded kernel `w * scale`, bias
      `b * scale + shift` and `g = ||w * scale||` (eq. 2: the same outputs),
      and the normalization is removed.
    - `"wn_mobn"`: the same weight-normalized layer without bias, followed by
      mean-only BN holding the rest of the map (section 4): the same
      inference outputs.
    - `"nc"`: a `Conv2D` feeding a normalization alone becomes a
      `NormalizedConv2D` with its kernel and bias (Kim et al. 2020,
      arXiv:2005.05274, eq. 2) and the normalization is removed; not exact.

    A normalization that the target cannot replace (no linear layer feeds it
    alone for a kernel target, a `DepthwiseConv2D` before `"nc"`, an input
    the new norm refuses, such as a rank-2 input for DWCK) is kept as it
    was and reported, with the reason; a warning says how many were kept.
    Every other layer is copied with its weights; layer names are kept (a
    weight-normalized layer has the name of the layer it wraps). Nested
    functional and Sequential models are rebuilt too.

    A subclassed model is changed in place, for the targets that replace a
    normalization layer alone (all but `"wn"`, `"wn_mobn"`, `"nc"`, which
    change the layer feeding it and so take a graph): where the model, a
    custom layer or a wrapper holds a `source` layer as an attribute or in a
    list, tuple or dict attribute, it holds the new layer afterwards, in
    the old one's place among the weights (`keras_norms.graph.swap_held_layers`);
    functional and Sequential models it holds are converted as above and
    swapped in whole. Compile it again before training.

    Args:
        model: a built functional, Sequential or subclassed `keras.Model`, e.g.
            `keras.applications.ResNet50(weights=None)` (call a subclassed
            model once first: each normalization's input shape is needed).
        target: one of `TARGETS`.
        source: the normalization class (or tuple of classes) to replace;
            subclasses count. Defaults to Keras `BatchNormalization`.
        x_init: optional init batch for `"wn"` and `"wn_mobn"`: the new
            weight-normalized layers are then initialized from data
            (`keras_norms.data_dependent_init`, section 3), for a model that
            was not trained, instead of keeping the folded map.

    Returns:
        `(new_model, report)`: a new `keras.Model` (the given one is not
        changed and shares no layer with it) and a `ReplacementReport`. A
        model of a functional subclass (a keras-hub `Backbone`) comes back
        as a plain functional model with the same inputs and outputs. A
        subclassed model comes back itself, converted.

    Raises:
        TypeError: if `model` is not a `keras.Model` or `source` not a layer
            class.
        ValueError: for an unbuilt model, an unknown `target`, `"wn"`,
            `"wn_mobn"` or `"nc"` for a subclassed model, `"sync_bn"` off
            TensorFlow, `x_init` with a target that creates no weight
            normalization, or a model with no `source` layer.
    """
    _check_arguments(model, target, source)
    if x_init is not None and target not in ("wn", "wn_mobn"):
        raise ValueError(
            "replace_normalization: x_init initializes the weight-normalized layers of "
            f"target 'wn' or 'wn_mobn'. Received: target={target!r} with x_init"
        )
    if not is_graph_model(model):
        return _replace_held(model, target, source)
    layers = list(iter_layers(model, descend=is_model))
    norms = [layer for layer in layers if isinstance(layer, source) and not is_model(layer)]
    seen = {id(layer) for layer in layers}
    held = [
        layer for layer in iter_layers(model) if isinstance(layer, source) and id(layer) not in seen
    ]
    if not norms and not held:
        raise ValueError(
            f"replace_normalization found no {source} layer in model {model.name}. "
            f"Received: source={source!r}"
        )
    linears = {id(layer): layer for layer in layers if is_foldable_linear(layer)}
    pairs = normalization_pairs(
        model, linears.values(), [n for n in norms if has_inference_affine(n)]
    )
    linear_of = {id(norm): linears[linear_id] for linear_id, norm in pairs.items()}
    plan, replaced = _Plan(), []
    refused = [Refusal(layer.name, _HELD) for layer in held]
    for norm in norms:
        linear = linear_of.get(id(norm))
        try:
            if target in KERNEL_TARGETS:
                replaced.append(_replace_kernel(target, norm, linear, plan))
            else:
                replaced.append(_replace_norm(target, norm, linear, plan))
        except _Refused as refusal:
            refused.append(Refusal(norm.name, str(refusal)))
    new_model = rebuild(model, plan.replace)
    if x_init is not None:
        for layer in plan.weight_normalized():
            layer.initialized.assign(False)
        data_dependent_init(new_model, x_init)
        replaced = [dataclasses.replace(r, exact=False) for r in replaced]
    report = ReplacementReport(
        target, tuple(replaced), tuple(refused), model.count_params(), new_model.count_params()
    )
    _warn_kept(model, report)
    return new_model, report


def _warn_kept(model, report):
    if report.refused:
        refused = report.refused
        warnings.warn(
            f"replace_normalization kept {len(refused)} of "
            f"{len(refused) + len(report.replaced)} normalizations of {model.name} as they "
            f"were (target {report.target!r}): "
            + "; ".join(f"{r.layer}: {r.reason}" for r in refused[:3])
            + (" ..." if len(refused) > 3 else ""),
            stacklevel=3,
        )


def _replace_held(model, target, source):
    """`replace_normalization` of a subclassed model, in place (see there)."""
    params_before = model.count_params()
    not_graph = lambda layer: not is_graph_model(layer)  # noqa: E731
    tree = list(iter_layers(model, descend=not_graph))
    plan, replaced, refused = _Plan(), [], []
    for submodel in [layer for layer in tree if is_graph_model(layer)]:
        if any(isinstance(layer, source) for layer in iter_layers(submodel)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its refusals are in this call's report
                plan.new[id(submodel)], report = replace_normalization(submodel, target, source)
            replaced += report.replaced
            refused += report.refused
    norms = [layer for layer in tree if isinstance(layer, source) and not is_model(layer)]
    if not norms and not plan.new:
        raise ValueError(
            f"replace_normalization found no {source} layer in model {model.name}. "
            f"Received: source={source!r}"
        )
    planned = []  # (normalization, its Replacement)
    for norm in norms:
        if not norm.built:
            refused.append(Refusal(norm.name, "never called, so not built"))
            continue
        try:
            planned.append((norm, _replace_norm(target, norm, None, plan)))
        except _Refused as refusal:
            refused.append(Refusal(norm.name, str(refusal)))
    swapped = swap_held_layers(model, plan.new)
    for norm, replacement in planned:
        if id(norm) in swapped:
            replaced.append(replacement)
        else:
            refused.append(Refusal(norm.name, _UNREACHABLE))
    report = ReplacementReport(
        target, tuple(replaced), tuple(refused), params_before, model.count_params()
    )
    _warn_kept(model, report)
    return model, report
