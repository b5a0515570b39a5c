"""Training callbacks: measurements taken between epochs, written into the epoch logs, and
the per-step training log."""

import contextlib
import csv
import os
import time

import keras
import numpy as np
from keras import ops

from keras_norms.graph import is_model, iter_layers
from keras_norms.layers import WeightNormalization
from keras_norms.layers.arguments import check_names, check_positive_int
from keras_norms.layers.kernels import KERNEL_NAMES, kernel_owner
from keras_norms.layers.linear import channel_axis
from keras_norms.precise_statistics import population_statistics

# The attributes under which Keras layers (and ours: NormPropConv2D,
# NormPropDense, NormalizedConv2D) hold their kernels. Embeddings are left out:
# an Embedding's input is integer ids, not a hidden layer's input.
_KERNEL_ATTRIBUTES = tuple(name for name in KERNEL_NAMES if name != "embeddings")

_NAME = "HiddenInputStatistics"


def _innermost(layer):
    """The layer a chain of `keras.layers.Wrapper`s holds, or `layer` itself."""
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def has_kernel(layer):
    """Whether `layer` is a hidden layer with a kernel: a Dense or a convolution.

    True for a layer that holds a kernel itself (`kernel`, `depthwise_kernel`,
    `pointwise_kernel` or an RNN cell's `recurrent_kernel` attribute: Keras'
    Dense, EinsumDense and convolutions, `NormPropDense`, `NormPropConv2D`,
    `NormalizedConv2D`) and for a `keras.layers.Wrapper` of one
    (`WeightNormalization`, also with `kernel_names`, `TimeDistributed`,
    `Bidirectional`): a wrapper and the layer it wraps are one layer, counted
    once. A layer that only holds other layers (a normalization with a
    convolution stack such as `DWCKNormalization`, a nested model) has no
    kernel of its own.
    """
    if isinstance(layer, WeightNormalization):
        return True
    owner = kernel_owner(_innermost(layer))
    for name in _KERNEL_ATTRIBUTES:
        try:
            if getattr(owner, name, None) is not None:
                return True
        except (AttributeError, ValueError):  # an unbuilt layer's kernel property
            continue
    return False


def _check_x(x):
    try:
        leaves = keras.tree.flatten(keras.tree.map_structure(np.asarray, x))
    except (TypeError, ValueError):
        leaves = []
    counts = {leaf.shape[0] if leaf.ndim else 0 for leaf in leaves}
    if not leaves or len(counts) != 1 or 0 in counts:
        shapes = [getattr(leaf, "shape", None) for leaf in leaves]
        raise ValueError(
            f"{_NAME} expects x to be a non-empty array (or a list or dict of arrays of "
            "the same length) of held-out inputs, examples along the first axis. "
            f"Received: x of type {type(x).__name__} with shapes {shapes}"
        )
    return x


def _check_layer_names(layers):
    names = check_names(_NAME, "layers", layers, "layer names")
    if names is not None and len(set(names)) != len(names):
        raise ValueError(f"{_NAME} expects distinct layer names. Received: layers={layers!r}")
    return names


def _check_network(network):
    try:
        inputs, outputs = network.inputs, network.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not isinstance(network, keras.Model) or not inputs or not outputs:
        raise ValueError(
            f"{_NAME} expects network to be a functional (or sequential) keras.Model built "
            "on keras.Input tensors, whose layers' inputs it reads from the model's graph; a "
            "subclassed model has no such graph. "
            f"Received: network={getattr(network, 'name', network)!r} of type "
            f"{type(network).__name__}"
        )


def _kernel_layers(network):
    """The layers with a kernel in `network`'s own graph; refuses nested models holding some."""
    layers = []
    for layer in network.layers:
        if is_model(layer):
            if any(has_kernel(inner) for inner in iter_layers(layer)):
                raise ValueError(
                    f"{_NAME} observes the layers of one functional graph, but network "
                    f"{network.name!r} holds the nested model {layer.name!r}, whose layers "
                    "have kernels; pass that model as network=, with x preprocessed as it "
                    f"sees its inputs. Received: network={network.name!r}"
                )
            continue
        if has_kernel(layer):
            layers.append(layer)
    return layers


def _select(network, names):
    kernel_layers = _kernel_layers(network) if names is None else None
    if names is None:
        if len(kernel_layers) < 2:
            raise ValueError(
                f"{_NAME} expects a network with at least two layers with a kernel (the first "
                "one's input is the data and is not observed). Received: network "
                f"{network.name!r} with layers with a kernel "
                f"{[layer.name for layer in kernel_layers]}"
            )
        return kernel_layers[1:]
    by_name = {layer.name: layer for layer in network.layers}
    observed = []
    for name in names:
        layer = by_name.get(name)
        if layer is None or is_model(layer) or not has_kernel(layer):
            candidates = [layer.name for layer in network.layers if has_kernel(layer)]
            problem = "is not a layer of" if layer is None else "has no kernel in"
            raise ValueError(
                f"{_NAME} expects layers to name layers with a kernel (Dense, convolutions, "
                f"wrappers of them) of network {network.name!r}, which has {candidates}; "
                f"{name!r} {problem} it. Received: layers={list(names)!r}"
            )
        observed.append(layer)
    return observed


class HiddenInputStatistics(keras.callbacks.Callback):
    """Mean and standard deviation of one unit's input in each hidden layer, after each epoch.

    The measurement behind Figure 2 of Arpit et al. (NormProp), section 5.2:
    after every training epoch, the mean over a held-out set of the input to
    one randomly chosen (but fixed) unit of each hidden layer, a view of how
    far each layer's input distribution shifts during training (internal
    covariate shift).

    A hidden layer is a layer with a kernel (a Dense or a convolution, also
    under a wrapper such as `WeightNormalization`, and keras_norms'
    `NormPropDense`, `NormPropConv2D` and `NormalizedConv2D`; see
    `has_kernel`) in `network`'s graph, except the first one, whose input is
    the data. Its input is `layer.input` (after the previous layer's
    normalization and activation), of shape `(N, C)` for a Dense or
    `(N, H, W, C)` for a 2D convolution (`(N, C, H, W)` with
    `data_format="channels_first"`); its units are its `C` input channels.
    For each observed layer `k` one channel `c_k` is drawn once,
    uniformly, with `numpy.random.default_rng(seed)`, and with
    `x_k[n, i, j]` that channel's input for example `n` at position `(i, j)`,

        mean_k = (1 / (N P)) sum_{n, i, j} x_k[n, i, j]
        std_k = sqrt((1 / (N P)) sum_{n, i, j} (x_k[n, i, j] - mean_k)^2)

    over all `N` examples of `x` and all `P` spatial positions (none for a
    Dense): the population standard deviation, numpy's `std`. The values are
    in the units of the layer's input (the previous layer's activations).

    At the start of training (before any step and before a resumed run's
    backup is restored, if this callback comes before it: the run's initial
    weights; `initial`) and at the end of each epoch, `network` runs on `x`
    in inference mode (`training=False`: no dropout), through
    `Model.predict` in batches of `batch_size`, on any backend. Each example's
    per-channel mean and variance are computed in float32 in the graph, and
    merged over examples in float64. Batch normalizations (Keras' and every
    `BatchStatisticsNormalization`) normalize with their running averages, or,
    given `population_x`, with population statistics recomputed on it for the
    measurement (`keras_norms.precise_statistics.population_statistics`,
    notes eq. 1.64; the running averages are restored after): what the network
    computes at inference without the lag of running averages, which at the
    start of training still hold mostly their initial values. The epoch's values go into the epoch
    `logs` as Python floats, so that the callbacks after this one (put a
    `keras.callbacks.CSVLogger` after it) and `fit`'s `History` see them:

        hidden_input_mean_<k>, hidden_input_std_<k>  for k = 1, 2, ...

    in the order of the observed layers (`layer_names[k - 1]`).

    Args:
        x: held-out inputs (e.g. the validation images), an array of `N > 0`
            examples (or a list or dict of arrays for a network with several
            inputs), given to `network` as they are: for a `network` nested
            in the trained model, preprocessed as the trained model does
            before calling it.
        network: the functional or sequential `keras.Model` whose hidden
            layers are observed. Defaults to the model being trained.
        layers: names of the layers of `network` to observe, in order, each
            with a kernel. Defaults to every layer with a kernel of
            `network`'s graph but the first.
        seed: seed of the random choice of units.
        batch_size: examples per inference batch.
        population_x: inputs of `network` (the training split, preprocessed as
            `x`) on which its batch statistics are recomputed before each
            measurement, or None: its running averages as they are.
        population_batch_size: examples per batch of that recomputation (the
            training batch size: the batch statistics' `m`), at least 2 and
            at most the examples of `population_x`; defaults to `batch_size`.

    Attributes:
        layer_names: the observed layers' names, in log order.
        units: the observed channel of each, ints.
        initial: the statistics before training, a dict with the log keys.
        history: one dict with the log keys per epoch of the last `fit`.

    Examples:

    >>> import keras, numpy as np
    >>> inputs = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
    >>> h = keras.layers.Conv2D(4, 3, activation="relu", name="conv2")(h)
    >>> h = keras.layers.GlobalAveragePooling2D()(h)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="top")(h))
    >>> model.compile("sgd", "mse")
    >>> x = np.random.default_rng(0).normal(size=(16, 8, 8, 3))
    >>> statistics = HiddenInputStatistics(x[:8])
    >>> _ = model.fit(x, np.zeros((16, 2)), epochs=2, callbacks=[statistics], verbose=0)
    >>> statistics.layer_names
    ['conv2', 'top']
    >>> sorted(statistics.history[-1])
    ['hidden_input_mean_1', 'hidden_input_mean_2', 'hidden_input_std_1', 'hidden_input_std_2']

    Raises:
        ValueError: if `x` is empty or not arrays of the same length; if
            `network` (or the trained model, by default) is not a
            functional or sequential model with a graph (a subclassed one),
            holds a nested model with kernel layers (pass that one as
            `network`), or has fewer than two layers with a kernel; if a
            name in `layers` is not a layer of `network` or names one
            without a kernel, or names repeat; if `batch_size` is not
            positive; (at the first measurement) if `population_batch_size`
            is below 2 or above the examples of `population_x`.
        TypeError: if `layers` is not a list of strings, or `batch_size`
            not an int.

    Reference:
        Arpit, Zhou, Kota & Govindaraju, "Normalization Propagation: A
        Parametric Technique for Removing Internal Covariate Shift in Deep
        Networks", ICML 2016, https://arxiv.org/abs/1603.01431, section 5.2
        and Figure 2.
    """

    def __init__(
        self,
        x,
        network=None,
        layers=None,
        seed=0,
        batch_size=100,
        population_x=None,
        population_batch_size=None,
    ):
        super().__init__()
        self.x = _check_x(x)
        self.network = network
        self.layer_names_requested = _check_layer_names(layers)
        self.seed = seed
        self.batch_size = check_positive_int(_NAME, "batch_size", batch_size)
        self.population_x = population_x
        self.population_batch_size = population_batch_size or self.batch_size
        self.layer_names, self.units = [], []
        self.initial, self.history = None, []
        self._extractor = self._observed_network = None
        if network is not None:
            self._build(network)

    def _build(self, network):
        """Choose the layers and units, and build the feature-extraction model, once."""
        _check_network(network)
        observed = _select(network, self.layer_names_requested)
        rng = np.random.default_rng(self.seed)
        units, outputs = [], []
        for layer in observed:
            tensor = layer.input
            if not isinstance(tensor, keras.KerasTensor):
                raise ValueError(
                    f"{_NAME} expects each observed layer to take one input tensor. "
                    f"Received: layer {layer.name!r} with inputs {tensor!r}"
                )
            rank = len(tensor.shape)
            axis = channel_axis(layer) if rank > 2 else -1
            unit = int(rng.integers(tensor.shape[axis]))
            values = ops.cast(ops.take(tensor, unit, axis=axis), "float32")  # (N, *spatial)
            if rank > 2:
                spatial = tuple(range(1, rank - 1))
                outputs += [ops.mean(values, axis=spatial), ops.var(values, axis=spatial)]
            else:
                outputs += [values, ops.zeros_like(values)]
            units.append(unit)
        # One (N, 2K) output: each example's mean and variance of each observed unit.
        self._extractor = keras.Model(
            network.input, ops.stack(outputs, axis=1), name=f"{network.name}_hidden_inputs"
        )
        self._observed_network = network
        self.layer_names = [layer.name for layer in observed]
        self.units = units

    def measure(self):
        """The statistics of the observed units on `x` now, a dict with the log keys."""
        if self.population_x is None:
            statistics = contextlib.nullcontext()
        else:
            statistics = population_statistics(
                self._observed_network, self.population_x, self.population_batch_size
            )
        with statistics:
            moments = np.asarray(
                self._extractor.predict(self.x, batch_size=self.batch_size, verbose=0), "float64"
            )
        means, variances = moments[:, 0::2], moments[:, 1::2]
        # Every example has as many positions: the total variance is the mean
        # within-example variance plus the variance of the example means.
        grand_mean = means.mean(axis=0)
        std = np.sqrt(variances.mean(axis=0) + np.square(means - grand_mean).mean(axis=0))
        statistics = {}
        for k, (mean_k, std_k) in enumerate(zip(grand_mean, std), start=1):
            statistics[f"hidden_input_mean_{k}"] = float(mean_k)
            statistics[f"hidden_input_std_{k}"] = float(std_k)
        return statistics

    def on_train_begin(self, logs=None):
        network = self.model if self.network is None else self.network
        if self._observed_network is not network:
            self._build(network)
        self.history = []
        self.initial = self.measure()

    def on_epoch_end(self, epoch, logs=None):
        statistics = self.measure()
        self.history.append(statistics)
        if logs is not None:
            logs.update(statistics)


class EpochTime(keras.callbacks.Callback):
    """Adds each epoch's wall time in seconds, `epoch_time_s`, to the logs the callbacks after
    it see (put it first)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_time_s"] = time.perf_counter() - self._start


class BatchLog(keras.callbacks.Callback):
    """Every `every` training steps, the loss and metrics of that step's own batch, to a CSV.

    Keras' batch logs hold each metric's running mean over the epoch so far,
    weighted by examples; the batch's own value is recovered from two
    consecutive means: `(m_k S_k - m_{k-1} S_{k-1}) / (S_k - S_{k-1})`, where
    `S_k` is the examples seen after batch `k` (`batch_size` a batch, the
    last batch of an epoch holding what is left of `examples`). Rows:
    `step` (1-based, counted over epochs), `epoch` (0-based), then `loss`
    and each metric, as `history.csv` names them. Appends to an existing
    file, so a resumed run continues it.

    Args:
        path: the CSV file.
        every: a positive int, the steps between two rows.
        examples: training examples per epoch, a positive int.
        batch_size: examples per step (the global batch), a positive int.

    Raises:
        TypeError: naming the callback, for a count that is not an integer
            (a float, a bool).
        ValueError: naming the callback, for a count below 1.
    """

    def __init__(self, path, every, examples, batch_size):
        super().__init__()
        self.path = path
        self.every = check_positive_int("BatchLog", "every", every)
        self.examples = check_positive_int("BatchLog", "examples", examples)
        self.batch_size = check_positive_int("BatchLog", "batch_size", batch_size)
        self.steps_per_epoch = -(-self.examples // self.batch_size)

    def _seen(self, batch):
        """Examples seen in the epoch after its 0-based `batch`."""
        return min((batch + 1) * self.batch_size, self.examples)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._previous = epoch, {}

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        means = {name: float(value) for name, value in logs.items()}
        previous, self._previous = self._previous, means
        step = self._epoch * self.steps_per_epoch + batch + 1
        if step % self.every:
            return
        seen, before = self._seen(batch), self._seen(batch - 1) if batch else 0
        values = {
            name: (mean * seen - previous.get(name, 0.0) * before) / (seen - before)
            for name, mean in means.items()
        }
        self._write({"step": step, "epoch": self._epoch, **values})

    def _write(self, row):
        new = not os.path.isfile(self.path)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
