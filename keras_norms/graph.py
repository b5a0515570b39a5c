"""The graph module: walk a model's layer tree, read its functional graph, rebuild it.

A functional or sequential `keras.Model` records each layer call as a node
(the layer, its input tensors, its output tensors). Reading:
`iter_layers` walks the layers a model or layer holds, and
`normalization_pairs` finds the normalization that alone follows a linear
layer. Rewriting: `rebuild` copies a functional or Sequential model, nested
ones too, with chosen layers replaced or removed; `fold`,
`replace_normalization` and `as_float32` are all built on it.

This is the one module of the package that reads Keras internals, because
Keras 3 has no public API for them:

- `layer._inbound_nodes` (`_calls`): every recorded call of a layer;
  Keras exposes a layer's first call only (`layer.input`, `layer.output`).
- `layer._flatten_layers` (`_sublayers`): the layers a custom layer or
  wrapper holds; Keras tracks them but exposes no accessor.
- `keras.src.models.functional.Functional` (`is_graph_model`): the class
  of functional models, which Keras does not export, to tell them from
  subclassed ones before `clone_model` refuses those.
- `layer._tracker.is_in_store` / `replace_tracked_value` (`swap_held_layers`): the list of
  layers a layer tracks. Assigning a new layer to an attribute tracks it but
  keeps the old one tracked (its weights stay in `model.weights`), and an
  item set in a tracked list is not tracked at all; Keras has no API to
  replace a tracked layer.

Subclassed models and sequential models without an input shape have no
graph: no calls and no pairs (their layers are still found by
`iter_layers`), and `rebuild` refuses them.
"""

import collections
import functools
import inspect

import keras

from keras_norms.layers.linear import channel_axis
from keras_norms.policies import dtype_policy

_Call = collections.namedtuple("_Call", ["layer", "inputs", "outputs"])


def _sublayers(layer):
    """The layers `layer` holds directly: a model's layers, a wrapper's or custom layer's."""
    if isinstance(layer, keras.Model):
        return layer.layers
    # Keras 3 tracks the layers a layer holds (attributes, lists, wrappers'
    # `layer`) and has no public accessor for them.
    return list(layer._flatten_layers(include_self=False, recursive=False))


def is_model(layer):
    """Whether `layer` is a `keras.Model`: `iter_layers(..., descend=is_model)` walks what
    `keras.models.clone_model(recursive=True)` and the functional graphs see."""
    return isinstance(layer, keras.Model)


def iter_layers(model, descend=None):
    """Yield every layer in `model`'s layer tree, depth first, each once.

    A layer is yielded, then the layers it holds, recursively: the layers of
    nested models, the layer inside a wrapper (`TimeDistributed`,
    `Bidirectional`, `WeightNormalization`) and the layers a custom layer or
    a subclassed model holds as attributes.

    Args:
        model: a `keras.Model` (functional, sequential or subclassed) or
            any `keras.layers.Layer`.
        descend: optional predicate: the walk goes into a layer's own
            layers only where `descend(layer)` is true (`is_model`: nested
            models only). Defaults to every layer.

    Yields:
        `keras.layers.Layer` instances (`InputLayer`s of functional models too).
    """
    seen = set()
    pending = list(reversed(_sublayers(model)))
    while pending:
        layer = pending.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        if descend is None or descend(layer):
            pending.extend(reversed(_sublayers(layer)))


@functools.cache
def _keras_attributes():
    """The attributes Keras itself gives a layer and a model (`_layers`, `_tracker`, ...)."""
    return frozenset(vars(keras.layers.Layer())) | frozenset(vars(keras.Model()))


def _held(value):
    """The objects an attribute's `value` holds: a list's, tuple's or dict's items, or itself."""
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _swapped(value, new_of):
    """`value` with each layer of `new_of` (by id) swapped, or `value` itself if none is."""
    if not any(id(item) in new_of for item in _held(value)):
        return value
    if isinstance(value, dict):
        return {key: new_of.get(id(item), item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [new_of.get(id(item), item) for item in value]
        return items if isinstance(value, list) else type(value)(items)
    return new_of[id(value)]


def _attributes(owner):
    """`owner`'s attributes by name. On PyTorch a Keras layer is a `torch.nn.Module`, which
    keeps the layers assigned to it apart from its other attributes (`named_children`)."""
    attributes = dict(vars(owner))
    if hasattr(owner, "named_children"):
        attributes.update(owner.named_children())
    return attributes


def swap_held_layers(root, new_of):
    """In place: put each new layer where `root`'s layer tree holds the layer it replaces.

    `new_of` maps `id(old)` to `new`. Where an attribute of a subclassed
    model, a custom layer or a wrapper holds `old` (itself, or in a list,
    tuple or dict), it holds `new` afterwards, in `old`'s place among the
    layers its owner tracks (so `model.weights` keeps its order and drops
    `old`'s). Functional and Sequential models are not walked into: their
    layers are their graph's (`rebuild` copies them).

    Returns:
        The set of ids of the old layers swapped.
    """
    swapped = set()
    owners = [root, *iter_layers(root, descend=lambda layer: not is_graph_model(layer))]
    for owner in owners:
        if is_graph_model(owner):
            continue
        for name, value in _attributes(owner).items():
            if name in _keras_attributes():
                continue
            new_value = _swapped(value, new_of)
            if new_value is value:
                continue
            for old in _held(value):
                if id(old) not in new_of:
                    continue
                # Not tracked by this owner where Keras missed it (an item set in a tracked
                # list) or another attribute of it held `old` too: the assignment below
                # tracks the new layer then.
                if owner._tracker.is_in_store("layers", old):
                    owner._tracker.replace_tracked_value("layers", old, new_of[id(old)])
                swapped.add(id(old))
            setattr(owner, name, new_value)
    return swapped


def _graph_tensors(model):
    """`(inputs, outputs)` of `model`'s graph, or `None` if it has none."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        return None
    if not inputs or not outputs:
        return None
    return list(inputs), list(outputs)


def _calls(model):
    """The layer calls of `model`'s own graph (not of nested models' graphs).

    Returns:
        A list of `_Call(layer, inputs, outputs)`, tensors as lists, one per
        call on a path from `model.inputs` to `model.outputs`; empty for a
        model with no graph.
    """
    tensors = _graph_tensors(model)
    if tensors is None:
        return []
    inputs, outputs = tensors
    producing = {}
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", ()):
            call = _Call(layer, list(node.input_tensors), list(node.output_tensors))
            for tensor in call.outputs:
                producing[id(tensor)] = call
    stop = {id(tensor) for tensor in inputs}
    calls, seen, pending = [], set(), list(outputs)
    while pending:
        tensor = pending.pop()
        if id(tensor) in stop or id(tensor) not in producing:
            continue
        call = producing[id(tensor)]
        if id(call) in seen:
            continue
        seen.add(id(call))
        calls.append(call)
        pending.extend(call.inputs)
    return calls


class _Graph:
    """Producers and consumer counts of one model's graph, computed once."""

    def __init__(self, model):
        self.calls = _calls(model)
        self.producer = {}
        self.consumers = collections.Counter()
        self.calls_of = collections.defaultdict(list)
        for call in self.calls:
            self.calls_of[id(call.layer)].append(call)
            for tensor in call.outputs:
                self.producer[id(tensor)] = call.layer
            for tensor in call.inputs:
                self.consumers[id(tensor)] += 1
        tensors = _graph_tensors(model)
        for tensor in tensors[1] if tensors else ():
            self.consumers[id(tensor)] += 1

    def only_call(self, layer):
        """`layer`'s call if it is called exactly once in this graph, else `None`."""
        calls = self.calls_of.get(id(layer), [])
        return calls[0] if len(calls) == 1 else None


def _single_producer(graph, layer, candidates):
    call = graph.only_call(layer)
    if call is None or len(call.inputs) != 1:
        return None
    found = candidates.get(id(graph.producer.get(id(call.inputs[0]))))
    if found is None:
        return None
    produced = graph.only_call(found)
    if produced is None or len(produced.outputs) != 1:
        return None
    return found


def normalization_pairs(model, linears, norms):
    """Which normalization directly follows which linear layer, in `model`.

    A pair `(linear, norm)` is one where, in the graph of `model` or of a
    model nested in it: `norm` is called once, on one tensor; that tensor is
    the only output of `linear`'s only call; nothing else uses it (no other
    layer call, not a model output); and `norm.axis` is the channel axis of
    `linear`'s output. Then `norm` alone sees the output of `linear`:
    a mean-only BN owns its mean for data-dependent init (Salimans & Kingma
    2016, arXiv:1602.07868, section 4), and an inference-mode normalization
    folds into its kernel and bias.

    Args:
        model: a `keras.Model`; functional and sequential graphs, nested
            ones too, are searched; subclassed models have no graph and
            give no pairs.
        linears: iterable of linear layers (Dense, convolutions, or
            wrappers of them) of `model`.
        norms: iterable of normalization layers with an integer `axis`.

    Returns:
        A dict `{id(linear): norm}`.
    """
    linears = {id(layer): layer for layer in linears}
    norms = list(norms)
    pairs = {}
    nested = [layer for layer in iter_layers(model, descend=is_model) if is_model(layer)]
    for graph_model in [model] + nested:
        graph = _Graph(graph_model)
        for norm in norms:
            linear = _single_producer(graph, norm, linears)
            if linear is None:
                continue
            tensor = graph.only_call(norm).inputs[0]
            rank = len(tensor.shape)
            if graph.consumers[id(tensor)] != 1:
                continue
            if norm.axis % rank == channel_axis(linear) % rank:
                pairs[id(linear)] = norm
    return pairs


def is_graph_model(model):
    """Whether `model` has a graph `rebuild` can copy: a functional or Sequential model."""
    from keras.src.models.functional import Functional  # Keras exports no public class

    return isinstance(model, (Functional, keras.Sequential))


# What a `rebuild` replacement function returns for a layer whose call is skipped.
REMOVE = "remove"


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


def copy_layer(layer, float32=False, **overrides):
    """A new, unbuilt layer of `layer`'s type from its config, with `overrides`.

    Args:
        layer: any serializable Keras layer.
        float32: whether mixed-precision `dtype` entries of the config (the
            layer's and those of layers it holds) become float32.
        **overrides: config entries to set, e.g. `name`, `use_bias`.

    Returns:
        A new `keras.layers.Layer`, no weights yet.
    """
    config = layer.get_config()
    config = _float32_config(config) if float32 else dict(config)
    config.update(overrides)
    return type(layer).from_config(config)


def copy_weights(old, new):
    """Give the built layer `new` the weights of `old` (same type and config).

    An adapted preprocessing layer (Keras `Normalization`) is finalized
    after, as `adapt` does.
    """
    new.set_weights(old.get_weights())
    if hasattr(new, "finalize_state"):  # adapted preprocessing layers
        new.finalize_state()


def _accepted(layer, kwargs):
    """The keyword arguments of `kwargs` that `layer.call` takes."""
    parameters = inspect.signature(layer.call).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    return {key: value for key, value in kwargs.items() if key in parameters}


def rebuild(model, replace=None, float32=False):
    """A copy of a functional or Sequential model, with chosen layers replaced or removed.

    The graph-rewrite engine of the package (`keras.models.clone_model`
    driven layer by layer). `replace(layer)` is asked for each layer of the
    model's graph and of the functional and Sequential models nested in it,
    and returns:

    - `None`: the layer is copied (`copy_layer`) with its weights;
    - `REMOVE`: its call is skipped, its input passed on (in a Sequential
      model an `Identity` of the same name stands there);
    - a layer: it stands in the old one's place and is called with the
      keyword arguments of the recorded call that its `call` takes (a
      normalization's `mask` or `training` are dropped for a layer that
      has none);
    - `(layer, weights)`: the same, given `weights` (a list of arrays)
      once it is built.

    A nested functional or Sequential model is rebuilt once however often it
    is called. Custom layers are copied whole, with the layers they hold.

    Args:
        model: a functional or Sequential `keras.Model` with inputs.
        replace: the function above; `None` copies every layer.
        float32: whether the copies compute in float32 whatever the
            model's dtype policies (mixed precision keeps its variables in
            float32, so nothing is lost); layers created while rebuilding
            default to float32 too.

    Returns:
        A new `keras.Model`. A model of a functional subclass (a keras-hub
        `Backbone`) comes back as a plain functional model with the same
        inputs and outputs.

    Raises:
        ValueError: from `keras.models.clone_model`, for a subclassed model.
    """
    replace = replace or (lambda layer: None)
    if float32:
        with dtype_policy("float32"):
            return _rebuild(model, replace, True, {})
    return _rebuild(model, replace, False, {})


def _rebuild(model, replace, float32, rebuilt):
    weights, removed, new_ids = [], set(), set()

    def clone(layer):
        if not isinstance(layer, keras.layers.Layer):
            return layer  # an op called in the graph (keras.ops.relu): stateless, reused
        choice = replace(layer)
        if choice is REMOVE:
            identity = keras.layers.Identity(name=layer.name)
            removed.add(id(identity))
            return identity
        if isinstance(choice, tuple):
            choice, values = choice
            weights.append((choice, values))
        if choice is not None:
            new_ids.add(id(choice))
            return choice
        if is_graph_model(layer):
            if id(layer) not in rebuilt:
                rebuilt[id(layer)] = _rebuild(layer, replace, float32, rebuilt)
            return rebuilt[id(layer)]
        copy = copy_layer(layer, float32=float32)
        weights.append((copy, layer))
        return copy

    def call(layer, *args, **kwargs):
        if id(layer) in removed:
            return args[0]
        if id(layer) in new_ids:
            kwargs = _accepted(layer, kwargs)
        return layer(*args, **kwargs)

    functional = not isinstance(model, keras.Sequential)
    result = keras.models.clone_model(
        model, clone_function=clone, call_function=call if functional else None
    )
    for new, source in weights:
        if isinstance(source, keras.layers.Layer):
            copy_weights(source, new)
        else:
            new.set_weights(source)
    return result
