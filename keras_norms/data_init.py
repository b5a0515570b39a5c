"""Data-dependent initialization of weight-normalized models (Salimans & Kingma 2016,
arXiv:1602.07868, section 3).

The init pass is an observer of `WeightNormalization` calls
(`keras_norms.layers.weight_norm.observe_calls`): each weight-normalized
layer that runs in the pass reports itself, its pre-activation is measured
(`WeightNormalization.pre_activation`), checked, pooled where it is called
once per time step, all-reduced across replicas, and `g` and the bias are
set from its moments (`WeightNormalization.initialize_from_moments`).
"""

import collections
import contextlib
import warnings

import keras
import numpy as np
from keras import ops

from keras_norms.graph import iter_layers, normalization_pairs
from keras_norms.layers.batch_statistics import batch_mean
from keras_norms.layers.kernels import output_feature_axes
from keras_norms.layers.mean_only_bn import MeanOnlyBatchNormalization
from keras_norms.layers.weight_norm import WeightNormalization, live_layers, observe_calls

# A pre-activation whose variance over the init batch is below this, relative
# to 1 + mean^2, is constant up to float32 rounding: data_dependent_init
# refuses it (it would set g near 1e5).
_CONSTANT_VARIANCE = 1e-12


class PooledMoments:
    """Per-feature mean and variance of values that arrive in parts, merged exactly.

    Chan, Golub & LeVeque's pairwise update, in float64: after `add` of
    each part `(values, features)`, `mean` and `m2 / count` equal the mean
    and variance of all parts together.
    """

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, part):
        part = np.asarray(part, "float64")
        count, mean = len(part), part.mean(axis=0)
        m2 = np.sum(np.square(part - mean), axis=0)
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * count / total
        self.m2 = self.m2 + m2 + np.square(delta) * self.count * count / total
        self.count = total


def _features_last(layer, t):
    """`t` as `(values, features)`: the output kernel's features last, in the kernel's order."""
    features = output_feature_axes(layer.layer, ops.ndim(t))
    others = [a for a in range(ops.ndim(t)) if a not in features]
    t = ops.transpose(t, others + list(features))
    return ops.reshape(t, (-1, int(np.prod(layer.g.shape))))


def _is_traced(tensor):
    """Whether `tensor`, a layer's input in the pass, is symbolic: the call is being traced."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return not tf.executing_eagerly()
    if keras.backend.backend() == "jax":
        import jax

        return isinstance(tensor, jax.core.Tracer)
    return False


def _check_statistics(layer, mean, variance, values):
    """A ValueError naming `layer` for a degenerate pre-activation `t`.

    `values` is the number of values of `t` per output feature.
    """
    if values < 2:
        raise ValueError(
            f"data_dependent_init: {layer.name} needs at least 2 values per output feature "
            "of its pre-activation to take a standard deviation (examples times positions); "
            f"nothing was initialized. Received: {values} value per feature"
        )
    mean, variance = ops.convert_to_numpy(mean), ops.convert_to_numpy(variance)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(variance))):
        raise ValueError(
            f"data_dependent_init: the pre-activation of {layer.name} on the init batch "
            "is not finite (NaN or inf in x_init, or from the layers before it); "
            f"nothing was initialized. Received: mean={mean.tolist()[:4]}..."
        )
    constant = variance <= _CONSTANT_VARIANCE * (1.0 + np.square(mean))
    if np.any(constant):
        raise ValueError(
            f"data_dependent_init: the pre-activation of {layer.name} is constant over "
            f"the init batch for output features {np.flatnonzero(constant).tolist()[:8]} "
            "(a constant input or an all-zero kernel), so 1/std is undefined; "
            f"nothing was initialized. Received: variance={variance.tolist()[:4]}..."
        )


def _needs_init(layer):
    return layer.data_init and not _is_initialized(layer)


class _InitPass:
    """The observer of the init passes: measures each layer to initialize and sets its `g`.

    Every variable it may write is saved first, so that `restore` undoes a
    failed pass. A layer still unbuilt when the pass starts (built in the
    pass) is initialized when it runs in an eager pass; so is one that runs
    but is not among the model's `tree` of layers (Keras does not track
    it), which is listed in `untracked`.
    """

    def __init__(self, layers, tree, owned, synchronized):
        self.layers = {}
        self.tree = {id(layer) for layer in tree}
        self.owned = owned  # ids of layers whose mean a following mean-only BN owns
        # All-reduce the statistics (tf.distribute); the pass is then traced by design.
        self.synchronized = synchronized
        self.saved = []
        self.untracked = []
        self.traced = {}  # id -> layer reached inside a trace in an eager pass (jax.jit)
        self.pools = {}  # id(layer) -> PooledMoments, in a pooled pass
        self.calls = collections.Counter()
        for layer in layers:
            self._adopt(layer)

    def _adopt(self, layer):
        self.layers[id(layer)] = layer
        self.saved += [(v, ops.convert_to_numpy(v)) for v in layer.initialization_variables()]

    def start(self, pooled):
        """Begin a forward pass: count calls anew; pool the statistics of `pooled` layers."""
        self.calls.clear()
        self.pools = {id(layer): PooledMoments() for layer in pooled}

    def __call__(self, layer, inputs, *args, **kwargs):
        first = keras.tree.flatten(inputs)[0]
        if isinstance(first, keras.KerasTensor):
            return  # a shape inference, not a pass
        traced = _is_traced(first)
        if traced and not self.synchronized:
            if id(layer) in self.layers or _needs_init(layer):
                self.traced[id(layer)] = layer
            return
        if id(layer) not in self.layers:
            if traced or not _needs_init(layer):
                return
            self._adopt(layer)
            if id(layer) not in self.tree:
                self.untracked.append(layer)
        t = _features_last(layer, layer.pre_activation(inputs, *args, **kwargs))
        pool = self.pools.get(id(layer))
        if pool is not None:
            pool.add(ops.convert_to_numpy(t))
            return
        # Two passes (mean, then mean squared deviation), each all-reduced
        # if synchronized: E[t^2] - E[t]^2 would cancel in float32.
        mean = batch_mean(t, [0], self.synchronized, keepdims=True)
        variance = batch_mean(ops.square(t - mean), [0], self.synchronized)
        mean = ops.reshape(mean, ops.shape(variance))
        if not traced:
            self.calls[id(layer)] += 1
            if self.calls[id(layer)] > 1:
                raise ValueError(
                    f"data_dependent_init: {layer.name} is called more than once in the "
                    "model's forward pass (a shared layer), and its statistics would come "
                    "from one call only; nothing was initialized. Pass data_init=False to "
                    "that layer to initialize the rest."
                )
            _check_statistics(layer, mean, variance, ops.shape(t)[0])
        layer.initialize_from_moments(mean, variance, center=id(layer) not in self.owned)

    def finish(self):
        """End a forward pass: set each pooled layer from its statistics over the pass's calls."""
        for key, pool in self.pools.items():
            if pool.count == 0:
                continue  # not reached in this pass
            layer = self.layers[key]
            variance = pool.m2 / pool.count
            _check_statistics(layer, pool.mean, variance, pool.count)
            layer.initialize_from_moments(pool.mean, variance, center=key not in self.owned)
        self.pools = {}

    def restore(self):
        """Give every variable the pass may have written its value from before."""
        for variable, value in self.saved:
            variable.assign(value)


def _time_distributed(model, layers):
    """Those of `layers` inside a `TimeDistributed`, which calls them once per time step."""
    inside = {
        id(inner)
        for wrapper in iter_layers(model)
        if isinstance(wrapper, keras.layers.TimeDistributed)
        for inner in iter_layers(wrapper)
    }
    return [layer for layer in layers if id(layer) in inside]


@contextlib.contextmanager
def _functions_run_eagerly():
    """On TensorFlow, `tf.function`s in the model's call run eagerly within the block.

    A custom layer may call weight-normalized layers inside a `tf.function`
    (tensorflow-addons-era code), traced at the model's first call: a pass
    that ran the traced graph would never call them in Python, where the
    init pass observes them.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    before = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(before)


def _eager_passes(model, x_init, training, init_pass, pooled):
    """Forward passes until the pooled layers' statistics are settled.

    A layer called once per time step pools its pre-activation over the
    calls of a pass and is set after it, so the layers after it see its
    initialized output only in the next pass: with `k` pooled layers,
    `k + 1` passes, each re-initializing every layer from the inputs of the
    pass before.
    """
    with _functions_run_eagerly():
        for _ in range(len(pooled) + 1):
            init_pass.start(pooled)
            model(x_init, training=training)
            init_pass.finish()


def _runs_untracked(model, x_init, tree):
    """Whether `model`'s call runs a weight-normalized layer to initialize outside its layer
    `tree` (one the model does not track). An inference pass tells, where such a layer
    exists at all: it updates no batch statistics."""
    inside = {id(layer) for layer in tree}
    if not any(id(layer) not in inside and _needs_init(layer) for layer in live_layers()):
        return False
    reached = []

    def observer(layer, inputs, *args, **kwargs):
        if id(layer) not in inside and _needs_init(layer):
            reached.append(layer)

    with observe_calls(observer), _functions_run_eagerly():
        model(x_init, training=False)
    return bool(reached)


def _is_initialized(layer):
    return layer.built and bool(ops.convert_to_numpy(layer.initialized))


def _warn(layers, message):
    """A warning `message`, its `{names}` the names of `layers`; none without layers."""
    if layers:
        names = ", ".join(layer.name for layer in layers)
        warnings.warn(message.format(names=names), stacklevel=3)


_UNREACHED = (
    "data_dependent_init: the forward pass did not reach {names} (a branch the model's call "
    "does not take on this input?); they keep g = ||v|| and stay uninitialized."
)
_TRACED = (
    "data_dependent_init: the forward pass reached {names} inside a compiled function "
    "(jax.jit in the model's call?), where their statistics cannot be read; they keep "
    "g = ||v|| and stay uninitialized. Call them outside the compiled function while "
    "data_dependent_init runs."
)
_UNTRACKED = (
    "data_dependent_init initialized {names}, which the model's call runs but the model does "
    "not track: their g is not in model.weights, so fit does not train it and saving does not "
    "keep it. Assign each weight-normalized layer (or a new list of them) to an attribute of "
    "the model or layer that calls it."
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
    # Traced once, inside the init pass's `observe_calls` block.
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
            uninitialized, with `g = ||v||`); naming those that the pass ran
            and initialized although the model does not track them (a
            layer put into a list after the list was assigned to the model:
            its `g` is not in `model.weights`).

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
    tree = [layer for layer in iter_layers(model) if isinstance(layer, WeightNormalization)]
    layers = [layer for layer in tree if _needs_init(layer)]
    if not layers and not _runs_untracked(model, x_init, tree):
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
    init_pass = _InitPass(layers, tree, owned, synchronized=strategy is not None)
    try:
        with observe_calls(init_pass):
            if strategy is None:
                _eager_passes(model, x_init, training, init_pass, pooled)
            else:
                _distributed_pass(strategy, model, x_init, training)
    except BaseException:
        init_pass.restore()
        raise
    traced = list(init_pass.traced.values())
    _warn(traced, _TRACED)
    unreached = [layer for layer in layers if not _is_initialized(layer)]
    _warn(unbuilt + [layer for layer in unreached if layer not in traced], _UNREACHED)
    _warn(init_pass.untracked, _UNTRACKED)
    return [layer for layer in layers + init_pass.untracked if _is_initialized(layer)]
