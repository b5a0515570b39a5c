"""Data-dependent initialization of weight-normalized models."""

import contextlib
import warnings

import keras
import numpy as np
from keras import ops

from keras_norms.graph import iter_layers, normalization_pairs
from keras_norms.layers.mean_only_bn import MeanOnlyBatchNormalization
from keras_norms.layers.weight_norm import PooledMoments, WeightNormalization


@contextlib.contextmanager
def _initializing(layers, owned, synchronized):
    """Set the layers' init flags for the passes; on an error, restore what they wrote.

    The calls and statistics of an eager pass are checked as each layer
    initializes (a traced, distributed pass cannot read them).
    """
    variables = [v for layer in layers for v in layer._init_variables()]
    saved = [ops.convert_to_numpy(v) for v in variables]
    for layer in layers:
        layer._init_center = id(layer) not in owned
        layer._init_synchronized = synchronized
    try:
        yield
    except BaseException:
        for variable, value in zip(variables, saved):
            variable.assign(value)
        raise
    finally:
        for layer in layers:
            layer._init_center = None
            layer._init_synchronized = False
            layer._init_calls = None
            layer._init_pool = None


def _time_distributed(model, layers):
    """Those of `layers` inside a `TimeDistributed`, which calls them once per time step."""
    inside = {
        id(inner)
        for wrapper in iter_layers(model)
        if isinstance(wrapper, keras.layers.TimeDistributed)
        for inner in iter_layers(wrapper)
    }
    return [layer for layer in layers if id(layer) in inside]


def _eager_passes(model, x_init, training, layers, pooled):
    """Forward passes until the pooled layers' statistics are settled.

    A layer called once per time step pools its pre-activation over the
    calls of a pass and sets `g` (and `b`) after it, so the layers after it
    see its initialized output only in the next pass: with `k` pooled
    layers, `k + 1` passes, each re-initializing every layer from the
    inputs of the pass before.
    """
    for _ in range(len(pooled) + 1):
        for layer in layers:
            layer._init_calls = 0
        for layer in pooled:
            layer._init_pool = PooledMoments()
        model(x_init, training=training)
        for layer in pooled:
            layer._finish_pooled_init()


def _is_initialized(layer):
    return layer.built and bool(ops.convert_to_numpy(layer.initialized))


def _warn_unreached(layers):
    if layers:
        names = ", ".join(layer.name for layer in layers)
        warnings.warn(
            f"data_dependent_init: the forward pass did not reach {names} (a branch the "
            "model's call does not take on this input?); they keep g = ||v|| and stay "
            "uninitialized.",
            stacklevel=3,
        )


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
    if _num_examples(x_init) < replicas:
        raise ValueError(
            f"data_dependent_init expects at least one init example per replica "
            f"({replicas} replicas). Received: x_init with {_num_examples(x_init)} examples"
        )
    shards = [
        keras.tree.map_structure(lambda x: np.array_split(np.asarray(x), replicas)[i], x_init)
        for i in range(replicas)
    ]
    values = strategy.experimental_distribute_values_from_function(
        lambda context: keras.tree.map_structure(
            tf.constant, shards[context.replica_id_in_sync_group]
        )
    )
    # Traced once, while the layers' init flags are set.
    tf.function(lambda x: strategy.run(lambda s: model(s, training=training), args=(x,)))(values)


def _is_batches(x):
    """Whether `x` is an iterable of batches (`tf.data.Dataset`, a generator), not inputs."""
    structure = (dict, list, tuple, np.ndarray)
    return not isinstance(x, structure) and not hasattr(x, "shape") and hasattr(x, "__iter__")


def _num_examples(x):
    return len(keras.tree.flatten(x)[0])


def _init_batch(x_init, num_examples):
    """The model inputs to initialize from: `x_init`, or the first examples of its batches.

    Batches that are `(x, y)` or `(x, y, sample_weight)` tuples give their
    `x`; batches are concatenated leaf by leaf (any input structure) up to
    `num_examples` examples.
    """
    if not _is_batches(x_init):
        return x_init
    taken, count = [], 0
    for batch in x_init:
        batch = batch[0] if isinstance(batch, tuple) else batch
        taken.append(keras.tree.map_structure(ops.convert_to_numpy, batch))
        count += _num_examples(taken[-1])
        if count >= num_examples:
            break
    if not taken:
        raise ValueError("data_dependent_init expects a non-empty x_init. Received: no batches")
    return keras.tree.map_structure(lambda *leaves: np.concatenate(leaves)[:num_examples], *taken)


def data_dependent_init(model, x_init, training=True, num_examples=500):
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
    Statistics are float32 over every axis but the channel axis. A layer
    inside `TimeDistributed`, which calls it once per time step, pools its
    statistics over the steps (exactly, in float64) and is set after the
    pass; the pass is repeated (once per such layer) so that the layers
    after it are initialized from its initialized output.

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
        model: a `keras.Model` of any kind. Its whole layer tree is searched
            (`keras_norms.graph.iter_layers`): nested models, wrappers such
            as `TimeDistributed`, custom layers and subclassed models that
            hold weight-normalized layers. Mean-only BN successors are found
            in functional and sequential graphs. A model not yet built is
            built first by one inference-mode call on `x_init`.
        x_init: the init batch in the model's input structure (an array
            or tensor shaped like the input, e.g. `(N, H, W, C)` float, or a
            list or dict of them), or an iterable of batches such as a
            `tf.data.Dataset` (of inputs or `(x, y)` pairs), of which the
            first `num_examples` examples are used. The paper uses N = 500,
            independent of the training batch size. Each layer needs at
            least 2 values per output feature (examples times positions).
            Under a strategy it must hold at least one example per replica.
        training: the `training` flag of the forward pass.
        num_examples: how many examples to take from an iterable `x_init`.

    Returns:
        The list of layers that were initialized by this call.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: naming the layer, if a layer's pre-activation on
            `x_init` has fewer than 2 values per output feature, is not
            finite, or is constant for some output feature (its `1/std` is
            undefined);
            naming the layer, if a weight-normalized layer is called more
            than once in the pass (shared), or if one inside
            `TimeDistributed` is initialized under a multi-replica strategy.
            Then nothing is written: every `g`, bias and `initialized` flag
            keeps its value from before the call.

    Warns:
        UserWarning: naming the weight-normalized layers with
            `data_init=True` that the forward pass did not reach (they stay
            uninitialized, with `g = ||v||`).

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
    x_init = _init_batch(x_init, num_examples)
    layers = [
        layer
        for layer in iter_layers(model)
        if isinstance(layer, WeightNormalization) and layer.data_init and not _is_initialized(layer)
    ]
    if not layers:
        return []
    if not all(layer.built for layer in layers):
        # A lazily built model (subclassed, Sequential without Input): build it
        # first, at inference (no batch-statistics update), so that every
        # variable the init pass may write exists and can be restored on error.
        model(x_init, training=False)
    unbuilt = [layer for layer in layers if not layer.built]
    layers = [layer for layer in layers if layer.built]
    mean_only = [
        layer for layer in iter_layers(model) if isinstance(layer, MeanOnlyBatchNormalization)
    ]
    owned = normalization_pairs(model, layers, mean_only)
    strategy = _multi_replica_strategy()
    pooled = _time_distributed(model, layers)
    if pooled and strategy is not None:
        raise ValueError(
            "data_dependent_init cannot pool the statistics of layers inside TimeDistributed "
            f"across replicas; initialize {pooled[0].name} outside the strategy's scope or "
            f"pass it data_init=False. Received: {len(pooled)} such layers"
        )
    with _initializing(layers, owned, synchronized=strategy is not None):
        if strategy is None:
            _eager_passes(model, x_init, training, layers, pooled)
        else:
            _distributed_pass(strategy, model, x_init, training)
    _warn_unreached(unbuilt + [layer for layer in layers if not _is_initialized(layer)])
    return [layer for layer in layers if _is_initialized(layer)]
