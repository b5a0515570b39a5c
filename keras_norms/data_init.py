"""Data-dependent initialization of weight-normalized models."""

import contextlib

import keras
from keras import ops

from keras_norms.layers.mean_only_bn import MeanOnlyBatchNormalization
from keras_norms.layers.weight_norm import WeightNormalization


def iter_layers(model):
    """Yield every layer of `model`, descending into nested models, in order."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)


def single_producer(layer, candidates):
    """The layer among `candidates` whose only output is `layer`'s only input.

    Uses the functional graph (`layer.input is producer.output`); returns
    `None` for layers called more than once or fed by anything else.
    """
    try:
        tensor = layer.input
    except (AttributeError, ValueError):
        return None
    for producer in candidates:
        try:
            if producer.output is tensor:
                return producer
        except (AttributeError, ValueError):
            continue
    return None


def _owned_by_mean_only_bn(model, layers):
    """The weight-normalized layers whose output a mean-only BN centers."""
    owned = set()
    for layer in iter_layers(model):
        if isinstance(layer, MeanOnlyBatchNormalization):
            producer = single_producer(layer, layers)
            if producer is not None:
                owned.add(id(producer))
    return owned


@contextlib.contextmanager
def _initializing(layers, owned):
    for layer in layers:
        layer._init_center = id(layer) not in owned
    try:
        yield
    finally:
        for layer in layers:
            layer._init_center = None


def data_dependent_init(model, x_init, training=True):
    """Initialize every weight-normalized layer of `model` from data, once.

    Runs one eager forward pass of `model` on the init batch `x_init`. Each
    `WeightNormalization` layer with `data_init=True` that is not yet
    initialized computes, from the inputs it receives in that pass (outputs
    of the layers before it, already initialized), the pre-activation
    `t = x . v / ||v||` and sets `g = 1 / std(t)` and `b = -mean(t) / std(t)`
    per output feature, so that its pre-activation on `x_init` has mean 0
    and standard deviation 1. When a `MeanOnlyBatchNormalization` directly
    follows the layer, only `g` is set: the mean-only BN owns the mean.
    Statistics are float32 over every axis but the channel axis.

    The pass runs in training mode by default, as in the paper's reference
    code, so dropout and noise are active and batch-normalization layers use
    the init batch's statistics (and update their running statistics once).
    Each initialized layer's `initialized` flag is set and saved with the
    model, so calling this again, or on a reloaded model, changes nothing.

    Args:
        model: a built `keras.Model` (functional or sequential models are
            searched recursively for weight-normalized layers and mean-only
            BN successors; subclassed models are initialized too, but
            without the mean-only BN detection).
        x_init: the init batch, an array or tensor shaped like the model's
            input, e.g. `(N, H, W, C)` float; the paper uses N = 500,
            independent of the training batch size.
        training: the `training` flag of the forward pass.

    Returns:
        The list of layers that were initialized by this call.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: if `x_init` holds fewer than 2 examples.

    Reference:
        Salimans & Kingma 2016 (arXiv:1602.07868), section 3;
        `../shared/papers/weight-normalization-convpool-cnn-c.md`, section 6C.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "data_dependent_init expects a keras.Model. "
            f"Received: model of type {type(model).__name__}"
        )
    batch = ops.shape(x_init)[0] if ops.ndim(x_init) else 0
    if batch < 2:
        raise ValueError(
            "data_dependent_init expects an init batch of at least 2 examples. "
            f"Received: x_init with shape {tuple(ops.shape(x_init))}"
        )
    layers = [
        layer
        for layer in iter_layers(model)
        if isinstance(layer, WeightNormalization)
        and layer.data_init
        and not (layer.built and bool(ops.convert_to_numpy(layer.initialized)))
    ]
    if not layers:
        return []
    owned = _owned_by_mean_only_bn(model, layers)
    with _initializing(layers, owned):
        model(x_init, training=training)
    return layers
