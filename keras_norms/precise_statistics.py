"""Population statistics for the inference of batch-normalized networks (notes eq. 1.64)."""

import contextlib
import math

import keras
import numpy as np

from keras_norms.graph import iter_layers
from keras_norms.layers import BatchStatisticsNormalization


def batch_normalizations(model):
    """The layers of `model` with running statistics: Keras BN and every batch-statistics one."""
    kinds = (keras.layers.BatchNormalization, BatchStatisticsNormalization)
    return [layer for layer in iter_layers(model) if isinstance(layer, kinds)]


def _running_statistics(layer):
    variance = getattr(layer, "moving_variance", None)  # none in mean-only BN
    return [layer.moving_mean] + ([] if variance is None else [variance])


def _check_batch_size(name, x, batch_size):
    """The examples in `x`, after checking that `batch_size` fits them (ValueError naming
    `name` if not)."""
    first = x[0] if isinstance(x, (list, tuple)) else x
    count = len(first)
    if not (isinstance(batch_size, int) and 2 <= batch_size <= count):
        raise ValueError(
            f"{name} expects a batch_size of at least 2 (a variance) and "
            f"at most the {count} examples of x. Received: batch_size={batch_size!r}"
        )
    return count


def _built_batch_normalizations(model, x, batch_size):
    """`batch_normalizations(model)`, built by an inference call on `x`'s first batch if they
    are not (which changes no statistic)."""
    layers = batch_normalizations(model)
    if not all(layer.built for layer in layers):
        model(keras.tree.map_structure(lambda a: a[:batch_size], x), training=False)
    return layers


def _values_per_channel(layer, batch_size):
    """`m`: how many values one batch gives each channel (batch times positions)."""
    shape = layer.get_build_config()["input_shape"]
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    kept = {a % len(shape) for a in axes} | {0}
    return batch_size * math.prod(s for a, s in enumerate(shape) if a not in kept)


def recompute_batch_statistics(model, x, batch_size=100):
    """Set every running mean and variance of `model` to its population value on `x`.

    The inference statistics of section 1.3.4 of the notes, eq. 1.64: over
    the `T` full batches of `x` (in order; a last partial batch is left
    out), the mean of the batch means, and `m / (m - 1)` times the mean of
    the batch variances, `m` being the values per channel in one batch
    (batch size times spatial positions): Bessel's correction, the unbiased
    variance. Instead of exponential running averages, which weigh the last
    batches most and lag behind the last weights. The batches run through
    `model` in training mode, as in training (so each normalization sees the
    inputs that the batch statistics of the layers before it give, and
    dropout is active), with each layer's momentum set so that its running
    average is the arithmetic one (`t / (t + 1)` at batch `t`) and restored
    after. Keras `BatchNormalization` and every
    `BatchStatisticsNormalization` (mean-only BN, DWCK, learned statistics)
    in the model's layer tree are set; no other weight changes. Learned
    statistics' `sigma^2` gets the same correction as a plain variance.

    Args:
        model: a `keras.Model` of any kind (built by an inference call on
            the first batch if it is not).
        x: the training inputs, an array (or a list of arrays) of `N`
            examples, `N >= batch_size`.
        batch_size: examples per batch, `m` for a dense layer; at least 2.

    Returns:
        The layers whose statistics were set, in the model's layer order.

    Raises:
        ValueError: for a `batch_size` below 2 or above `N`. Whatever the
            model's call raises, after restoring every running statistic.

    Reference:
        notes "Initialization and Normalization in DNN and CNN", section 1.3.4,
        eq. 1.64; Ioffe & Szegedy (arXiv:1502.03167), Algorithm 2.
    """
    count = _check_batch_size("recompute_batch_statistics", x, batch_size)
    layers = _built_batch_normalizations(model, x, batch_size)
    if not layers:  # nothing to set: no pass over x
        return []
    momenta = [layer.momentum for layer in layers]
    statistics = [v for layer in layers for v in _running_statistics(layer)]
    before = [np.asarray(v) for v in statistics]
    try:
        for t, start in enumerate(range(0, count - batch_size + 1, batch_size)):
            for layer in layers:
                layer.momentum = t / (t + 1)
            batch = keras.tree.map_structure(lambda a: a[start : start + batch_size], x)
            model(batch, training=True)
    except Exception:
        for variable, value in zip(statistics, before):  # a failed pass changes nothing
            variable.assign(value)
        raise
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    for layer in layers:
        if getattr(layer, "moving_variance", None) is not None:
            m = _values_per_channel(layer, batch_size)
            variance = np.asarray(layer.moving_variance, "float64") * m / (m - 1)
            layer.moving_variance.assign(variance.astype("float32"))
    return layers


@contextlib.contextmanager
def population_statistics(model, x, batch_size=100):
    """Within the `with` block, `model`'s running statistics hold their population values on
    `x` (`recompute_batch_statistics(model, x, batch_size)`); after it, their values before.

    For measuring a batch-normalized network in inference mode during training
    without the lag of its running averages (notes section 1.3.4, eq. 1.64
    against eq. 1.65), leaving training as it was. A model without running
    statistics is left alone. Arguments and errors as
    `recompute_batch_statistics`'; the statistics are restored also when the
    block raises.

    Examples:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    >>> x = np.random.default_rng(0).normal(5.0, 1.0, size=(64, 3)).astype("float32")
    >>> with population_statistics(model, x, batch_size=32):
    ...     print(np.round(np.asarray(model.layers[0].moving_mean), 1))
    [4.8 5.  5.2]
    >>> np.asarray(model.layers[0].moving_mean)
    array([0., 0., 0.], dtype=float32)
    """
    _check_batch_size("population_statistics", x, batch_size)
    layers = _built_batch_normalizations(model, x, batch_size)
    statistics = [v for layer in layers for v in _running_statistics(layer)]
    before = [np.array(v) for v in statistics]
    try:
        recompute_batch_statistics(model, x, batch_size)
        yield
    finally:
        for variable, value in zip(statistics, before):
            variable.assign(value)
