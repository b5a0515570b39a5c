"""Graph utilities: walk a model's layer tree and read its functional graph.

A functional or sequential `keras.Model` records each layer call as a node
(the layer, its input tensors, its output tensors). Keras 3 exposes a
layer's first call only (`layer.input`, `layer.output`) and has no public
node API, so `_calls` reads the recorded nodes of every layer of the model
(`layer._inbound_nodes`) and keeps those on a path from the model's inputs
to its outputs; `iter_layers` reads the layers a layer holds
(`layer._flatten_layers`). These two are the private Keras API this module,
and so the package, reads. Subclassed
models and sequential models without an input shape have no graph: no
calls, no producers, no consumers and no pairs (their layers are still
found by `iter_layers`).
"""

import collections

import keras

from keras_norms.layers.linear import channel_axis as linear_channel_axis

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


def producer(model, tensor):
    """The layer whose call in `model`'s graph outputs `tensor`.

    Args:
        model: a functional or sequential `keras.Model`.
        tensor: a symbolic `keras.KerasTensor` of `model`'s graph.

    Returns:
        The producing layer, or `None` for a model input or a tensor that is
        not in the graph.
    """
    return _Graph(model).producer.get(id(tensor))


def consumer_count(model, tensor):
    """How many times `tensor` is used in `model`'s graph.

    Counts each input position of each layer call in the graph (a layer
    that takes `tensor` twice counts twice), plus each time `tensor` is one
    of `model.outputs`. Calls inside nested models are not counted (they
    consume the nested model's own input tensors).

    Args:
        model: a functional or sequential `keras.Model`.
        tensor: a symbolic `keras.KerasTensor` of `model`'s graph.

    Returns:
        A non-negative int; 0 for a tensor the graph does not use.
    """
    return _Graph(model).consumers[id(tensor)]


def single_producer(model, layer, candidates):
    """The layer among `candidates` whose only output is `layer`'s only input.

    Both layers must be called exactly once in `model`'s graph, `layer` on
    one tensor and the producer returning one tensor.

    Args:
        model: a functional or sequential `keras.Model` whose graph holds
            both calls (the innermost nested model that contains them).
        layer: the consuming layer.
        candidates: iterable of layers.

    Returns:
        The producing layer, or `None`.
    """
    return _single_producer(_Graph(model), layer, {id(c): c for c in candidates})


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


def _linear_channel_axis(layer):
    """The channel axis of a linear layer's output (the wrapped layer's for a wrapper)."""
    inner = layer.layer if isinstance(layer, keras.layers.Wrapper) else layer
    return linear_channel_axis(inner)


def normalization_pairs(model, linears, norms, channel_axis=None):
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
        channel_axis: callable giving a linear layer's output channel axis
            (an int, negative or not). Defaults to
            `keras_norms.layers.linear.channel_axis` of the layer, or of the
            wrapped layer for a `keras.layers.Wrapper` such as
            `WeightNormalization`.

    Returns:
        A dict `{id(linear): norm}`.
    """
    channel_axis = channel_axis or _linear_channel_axis
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
