"""Data-dependent initialization of weight-normalized models."""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_norms.graph import iter_layers, normalization_pairs
from keras_norms.layers.mean_only_bn import MeanOnlyBatchNormalization
from keras_norms.layers.weight_norm import WeightNormalization


@contextlib.contextmanager
def _initializing(layers, owned, synchronized):
    for layer in layers:
        layer._init_center = id(layer) not in owned
        layer._init_synchronized = synchronized
    try:
        yield
    finally:
        for layer in layers:
            layer._init_center = None
            layer._init_synchronized = False


def _multi_replica_strategy():
    """The `tf.distribute` strategy in scope if it has several replicas, else `None`."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    return strategy if strategy.num_replicas_in_sync > 1 else None


def _distributed_pass(strategy, model, x_init, training):
    """One forward pass with each replica on its contiguous share of `x_init`."""
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    if len(x_init) < replicas:
        raise ValueError(
            f"data_dependent_init expects at least one init example per replica "
            f"({replicas} replicas). Received: x_init with {len(x_init)} examples"
        )
    shards = np.array_split(np.asarray(x_init), replicas)
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(shards[context.replica_id_in_sync_group])
    )
    # Traced once, while the layers' init flags are set.
    tf.function(lambda x: strategy.run(lambda s: model(s, training=training), args=(x,)))(values)


def data_dependent_init(model, x_init, training=True):
    """Initialize every weight-normalized layer of `model` from data, once.

    Runs one eager forward pass of `model` on the init batch `x_init`. Each
    `WeightNormalization` layer with `data_init=True` that is not yet
    initialized computes, from the inputs it receives in that pass (outputs
    of the layers before it, already initialized), the pre-activation
    `t = x . v / ||v||` and sets `g = 1 / std(t)` and `b = -mean(t) / std(t)`
    per output feature, so that its pre-activation on `x_init` has mean 0
    and standard deviation 1. When a `MeanOnlyBatchNormalization` directly
    follows the layer, on its channel axis, and nothing else uses the
    layer's output (`keras_norms.graph.normalization_pairs`), only `g` is
    set: the mean-only BN owns the mean.
    Statistics are float32 over every axis but the channel axis.

    The pass runs in training mode by default, as in the paper's reference
    code, so dropout and noise are active and batch-normalization layers use
    the init batch's statistics (and update their running statistics once).
    Each initialized layer's `initialized` flag is set and saved with the
    model, so calling this again, or on a reloaded model, changes nothing.

    Called inside the scope of a `tf.distribute` strategy with several
    replicas (TensorFlow backend), the pass runs on every replica, each on
    its contiguous share of `x_init`, and the init statistics are
    all-reduced, so every replica sets the same `g` and `b`: those of the
    whole init batch. Layers in the model with `synchronized=True` batch
    statistics see the global init batch too. Pass every worker the same
    `x_init` under `MultiWorkerMirroredStrategy`.

    Args:
        model: a built `keras.Model` (functional or sequential models are
            searched recursively for weight-normalized layers and mean-only
            BN successors; subclassed models are initialized too, but
            without the mean-only BN detection).
        x_init: the init batch, an array or tensor shaped like the model's
            input, e.g. `(N, H, W, C)` float; the paper uses N = 500,
            independent of the training batch size. Under a strategy it
            must hold at least one example per replica.
        training: the `training` flag of the forward pass.

    Returns:
        The list of layers that were initialized by this call.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: if `x_init` holds fewer than 2 examples.

    Reference:
        Salimans & Kingma, "Weight Normalization: A Simple Reparameterization
        to Accelerate Training of Deep Neural Networks", NeurIPS 2016
        (arXiv:1602.07868), section 3 (init) and section 4 (mean-only BN).
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
    mean_only = [
        layer for layer in iter_layers(model) if isinstance(layer, MeanOnlyBatchNormalization)
    ]
    owned = normalization_pairs(model, layers, mean_only)
    strategy = _multi_replica_strategy()
    with _initializing(layers, owned, synchronized=strategy is not None):
        if strategy is None:
            model(x_init, training=training)
        else:
            _distributed_pass(strategy, model, x_init, training)
    return layers
