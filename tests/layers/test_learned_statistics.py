"""LearnedStatisticsNormalization against numpy references of its reading of section 5."""

import math

import keras
import numpy as np
import pytest

from keras_norms.layers import LearnedStatisticsNormalization
from tests.layer_test_helper import assert_allclose, numpy, run_layer_test


def _conv1d_same(signal, kernel):
    """(N, L, Cin) x (k, Cin, Cout), 'same' zero padding as Keras pads it."""
    k = kernel.shape[0]
    left = (k - 1) // 2
    padded = np.pad(signal, ((0, 0), (left, k - 1 - left), (0, 0)))
    windows = np.stack(
        [padded[:, i : i + signal.shape[1]] for i in range(k)], axis=2
    )  # (N, L, k, Cin)
    return np.einsum("nlki,kio->nlo", windows, kernel)


def _network(values, kernels):
    h = values[:, :, None]
    for index, kernel in enumerate(kernels):
        h = _conv1d_same(h, kernel)
        if index < len(kernels) - 1:
            h = np.maximum(h, 0)
    return h[:, :, 0]


def _numpy_statistics(layer, x):
    """The documented reading: per-example networks, then the average over the batch."""
    kernels = lambda net: [w.numpy().astype("float64") for w in net.weights]  # noqa: E731
    m = x.mean(axis=(1, 2))
    mu = (m + _network(m, kernels(layer.mean_network))).mean(axis=0)
    v = ((x - mu) ** 2).mean(axis=(1, 2))
    raw = _network(v, kernels(layer.deviation_network)) + math.log(math.e - 1)
    return mu, (v * np.log1p(np.exp(raw))).mean(axis=0)


@pytest.mark.parametrize("network", ["first", "other"])
def test_matches_numpy_reference_in_training_and_inference(network):
    rng = np.random.default_rng(0)
    x = (1.0 + 2.0 * rng.normal(size=(3, 5, 5, 12))).astype("float32")
    layer = LearnedStatisticsNormalization(network=network, momentum=0.7)
    layer.build(x.shape)
    for weight in layer.trainable_weights:
        weight.assign(rng.normal(scale=0.5, size=weight.shape))
    mu, variance = _numpy_statistics(layer, x.astype("float64"))
    expected = (x - mu) / np.sqrt(variance + layer.epsilon)
    assert_allclose(layer(x, training=True), expected, rtol=1e-4, atol=1e-4)
    moving_mean, moving_variance = 0.3 * mu, 0.7 + 0.3 * variance
    assert_allclose(layer.moving_mean.numpy(), moving_mean, rtol=1e-4, atol=1e-6)
    assert_allclose(layer.moving_variance.numpy(), moving_variance, rtol=1e-4)
    inference = (x - moving_mean) / np.sqrt(moving_variance + layer.epsilon)
    assert_allclose(layer(x, training=False), inference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e4])
def test_starts_as_batch_normalization_at_any_offset(offset):
    """At initialization, BatchNormalization(center=False, scale=False) for x ~ N(offset, 1).

    A one-pass variance (E[x^2] - E[x]^2, or per example E[x^2] - 2 mu m +
    mu^2) cancels in float32 far from zero (x^2 ~ 1e8 has an ulp of 8): a
    report measured an output std of 0.30 where BN gives 0.999. Against
    numpy's float64 batch normalization of the same float32 input, and
    against Keras' layer; an all-ones mask makes Keras use its two-pass
    masked moments on every backend (its torch `ops.moments` is one-pass,
    NaN at 1e4). Tolerances: float32 means of values near 1e4 are off by
    ~1e-3 (Keras BN's own output by 1e-2 on TensorFlow).
    """
    x = (offset + np.random.default_rng(2).normal(size=(16, 6, 6, 8))).astype("float32")
    layer = LearnedStatisticsNormalization(epsilon=1e-3)
    y = numpy(layer(x, training=True))
    x64 = x.astype("float64")
    mean, variance = x64.mean(axis=(0, 1, 2)), x64.var(axis=(0, 1, 2))
    assert_allclose(y, (x64 - mean) / np.sqrt(variance + 1e-3), rtol=1e-3, atol=5e-3)
    assert_allclose(layer.moving_mean.numpy(), 0.01 * mean, rtol=1e-5, atol=1e-7)
    assert_allclose(layer.moving_variance.numpy(), 0.99 + 0.01 * variance, rtol=1e-5)
    bn = keras.layers.BatchNormalization(epsilon=1e-3, center=False, scale=False)
    expected = numpy(bn(x, training=True, mask=np.ones(x.shape[:-1], bool)))
    assert_allclose(y.std(axis=(0, 1, 2)), expected.std(axis=(0, 1, 2)), rtol=1e-3)
    assert_allclose(y, expected, atol=2e-2)


@pytest.mark.parametrize("channels", [96, 192, 384])
def test_fewer_trainable_parameters_than_batch_normalization(channels):
    shape = (None, 4, 4, channels)
    bn = keras.layers.BatchNormalization()
    bn.build(shape)
    bn_trainable = sum(int(np.prod(w.shape)) for w in bn.trainable_weights)
    for network, count in (("first", 152), ("other", 172)):
        layer = LearnedStatisticsNormalization(network=network)
        layer.build(shape)
        trainable = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
        assert trainable == count < bn_trainable == 2 * channels


def test_layer_test_helper(tmp_path):
    # Trainable: 4 Conv1D kernels in each of the two networks; non-trainable: running averages.
    run_layer_test(
        lambda: LearnedStatisticsNormalization(), (4, 4, 6), (4, 4, 6), 8, 2, str(tmp_path)
    )


def test_rejects_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="network 'first' or 'other'. Received: network='third'"):
        LearnedStatisticsNormalization(network="third")
    with pytest.raises(ValueError, match=r"Received: momentum=-0.5"):
        LearnedStatisticsNormalization(momentum=-0.5)
    with pytest.raises(
        ValueError, match=r"rank-4 \(N, H, W, C\).*Received: input_shape=\(None, 8, 3\)"
    ):
        LearnedStatisticsNormalization()(keras.Input((8, 3)))


@pytest.mark.parametrize("epsilon", [0.0, -1.0, float("nan")])
def test_rejects_an_epsilon_that_is_not_positive(epsilon):
    """`(x - mu) / sqrt(var + epsilon)` would divide by zero or take NaN: refused up front."""
    with pytest.raises(
        ValueError, match=r"^LearnedStatisticsNormalization .*`epsilon`.*Received: epsilon="
    ):
        LearnedStatisticsNormalization(epsilon=epsilon)
