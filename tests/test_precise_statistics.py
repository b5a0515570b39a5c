"""recompute_batch_statistics: notes eq. 1.64 against numpy, any model, nothing else changed."""

import keras
import numpy as np
import pytest

from keras_norms import recompute_batch_statistics
from keras_norms.layers import DWCKNormalization, MeanOnlyBatchNormalization
from keras_norms.precise_statistics import population_statistics
from tests.layer_test_helper import assert_allclose, numpy

M = 8  # batch size
T = 4  # full batches; 3 more examples are left out


def _dense_model():
    inputs = keras.Input((5,))
    h = keras.layers.Dense(4, name="dense1")(inputs)
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn")(h)
    h = keras.layers.Dense(3, name="dense2")(h)
    return keras.Model(inputs, MeanOnlyBatchNormalization(name="mobn")(h))


def _expected_dense(model, x):
    """Eq. 1.64 in numpy: BN's batch statistics of dense1's output, MOBN's of dense2's."""
    layer = model.get_layer
    w1, b1 = (numpy(v, "float64") for v in layer("dense1").weights)
    w2, b2 = (numpy(v, "float64") for v in layer("dense2").weights)
    gamma, beta = (numpy(v, "float64") for v in layer("bn").trainable_weights)
    means, variances, mobn_means = [], [], []
    for t in range(T):
        h = x[t * M : (t + 1) * M].astype("float64") @ w1 + b1
        means.append(h.mean(0))
        variances.append(h.var(0))
        normalized = gamma * (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-3) + beta
        mobn_means.append((normalized @ w2 + b2).mean(0))
    return np.mean(means, 0), M / (M - 1) * np.mean(variances, 0), np.mean(mobn_means, 0)


def test_dense_statistics_are_the_population_values_of_eq_1_64():
    rng = np.random.default_rng(0)
    x = (3.0 + 2.0 * rng.normal(size=(T * M + 3, 5))).astype("float32")
    model = _dense_model()
    for v in model.trainable_weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    trainable = [numpy(v) for v in model.trainable_weights]
    mean, variance, mobn_mean = _expected_dense(model, x)
    layers = recompute_batch_statistics(model, x, batch_size=M)
    assert [layer.name for layer in layers] == ["bn", "mobn"]
    bn, mobn = model.get_layer("bn"), model.get_layer("mobn")
    assert_allclose(bn.moving_mean, mean, rtol=1e-5, atol=1e-5)
    assert_allclose(bn.moving_variance, variance, rtol=1e-5, atol=1e-5)
    assert_allclose(mobn.moving_mean, mobn_mean, rtol=1e-4, atol=1e-5)
    assert (bn.momentum, mobn.momentum) == (0.9, 0.9)  # restored
    for before, after in zip(trainable, model.trainable_weights):
        np.testing.assert_array_equal(before, numpy(after))


def test_a_convolution_corrects_by_the_values_per_channel():
    """m = batch x positions; DWCK's simple variance gets the same correction."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(T * M, 4, 4, 2)).astype("float32")
    norm = DWCKNormalization(momentum=0.5)
    model = keras.Sequential([keras.Input((4, 4, 2)), norm])
    recompute_batch_statistics(model, x, batch_size=M)
    p = numpy(norm.effective_weights(), "float64")  # (H, W, C), the learned weighted mean
    batches = x.astype("float64").reshape(T, M, 4, 4, 2)
    means = (batches.mean(1) * p).sum((1, 2))  # (T, C): eq. 7 per batch
    variances = ((batches - means[:, None, None, None]) ** 2).mean((1, 2, 3))
    m = M * 4 * 4
    assert_allclose(norm.moving_mean, means.mean(0), rtol=1e-5, atol=1e-6)
    assert_allclose(norm.moving_variance, m / (m - 1) * variances.mean(0), rtol=1e-5)


def test_nested_and_subclassed_models():
    class Classifier(keras.Model):
        def __init__(self):
            super().__init__()
            self.body = keras.Sequential([keras.layers.Dense(4), keras.layers.BatchNormalization()])
            self.head = keras.layers.Dense(2)

        def call(self, x, training=None):
            return self.head(self.body(x, training=training))

    model = Classifier()
    x = np.random.default_rng(2).normal(size=(16, 3)).astype("float32")
    model(x)
    bn = model.body.layers[1]
    recompute_batch_statistics(model, x, batch_size=8)
    h = numpy(model.body.layers[0](x), "float64").reshape(2, 8, 4)
    assert_allclose(bn.moving_mean, h.mean(1).mean(0), rtol=1e-5, atol=1e-6)


def test_a_failed_pass_restores_every_statistic():
    """The second batch fails, after the first has moved the statistics."""

    class FailsOnSecondBatch(keras.Model):
        def __init__(self):
            super().__init__()
            self.inner = _dense_model()
            self.calls = 0

        def call(self, x, training=None):
            self.calls += 1
            if self.calls > 2:  # the build call, then the first batch
                raise RuntimeError("the second batch fails")
            return self.inner(x, training=training)

    model = FailsOnSecondBatch()
    x = np.random.default_rng(3).normal(size=(T * M, 5)).astype("float32")
    model(x[:1])
    bn = model.inner.get_layer("bn")
    before = numpy(bn.moving_mean)
    with pytest.raises(RuntimeError, match="the second batch fails"):
        recompute_batch_statistics(model, x, batch_size=M)
    np.testing.assert_array_equal(numpy(bn.moving_mean), before)
    assert bn.momentum == 0.9


@pytest.mark.parametrize("batch_size", [1, 100, 2.0])
def test_refuses_a_batch_size_without_a_variance_or_beyond_the_data(batch_size):
    with pytest.raises(ValueError, match=f"Received: batch_size={batch_size!r}"):
        recompute_batch_statistics(_dense_model(), np.ones((32, 5), "float32"), batch_size)


class _CallCounter(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, inputs):
        self.calls += 1
        return inputs


def test_a_model_without_batch_statistics_is_not_run():
    counter = _CallCounter()
    model = keras.Sequential([keras.Input((3,)), counter, keras.layers.Dense(2)])
    x = np.ones((40, 3), "float32")
    model(x[:2])
    calls = counter.calls
    assert recompute_batch_statistics(model, x, batch_size=10) == []
    with population_statistics(model, x, batch_size=10):
        pass
    assert counter.calls == calls  # no pass over x
