"""Activation moments c2, c1 and the Jacobian factor (NormProp Remarks 1-2, section 3.4)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate, stats

from keras_norms import activation_moments, jacobian_factor
from keras_norms.gaussian_moments import prelu_jacobian_factor, prelu_moments
from tests.layer_test_helper import assert_allclose

QUADRATURE_ACTIVATIONS = [
    "tanh",
    "sigmoid",
    "elu",
    "selu",
    "gelu",
    "softplus",
    "swish",
    "mish",
    "relu6",
    "hard_sigmoid",
    "hard_silu",
    "softsign",
]


def _scipy_moments(name):
    """Independent reference: adaptive quadrature split at the kinks."""
    f = keras.activations.get(name)

    def value(x):
        return float(keras.ops.convert_to_numpy(f(keras.ops.convert_to_tensor([x], "float64")))[0])

    kinks = [-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, 6.0]
    mean = integrate.quad(
        lambda x: value(x) * stats.norm.pdf(x), -12, 12, points=kinks, limit=200, epsabs=1e-12
    )[0]
    var = integrate.quad(
        lambda x: (value(x) - mean) ** 2 * stats.norm.pdf(x),
        -12,
        12,
        points=kinks,
        limit=200,
        epsabs=1e-12,
    )[0]
    return mean, math.sqrt(var)


def test_relu_constants_of_remark_1():
    c2, c1 = activation_moments("relu")
    assert c2 == pytest.approx(1 / math.sqrt(2 * math.pi), abs=1e-15)
    assert c1 == pytest.approx(math.sqrt(0.5 * (1 - 1 / math.pi)), abs=1e-15)


@pytest.mark.parametrize("a", [0.0, 0.1, 0.25, -0.5, 1.0])
def test_prelu_constants_of_remark_2(a):
    c2, c1 = prelu_moments(a)
    assert c2 == pytest.approx((1 - a) / math.sqrt(2 * math.pi), abs=1e-15)
    assert c1 == pytest.approx(math.sqrt(0.5 * ((1 + a * a) - (1 - a) ** 2 / math.pi)), abs=1e-15)
    x = np.linspace(-12, 12, 2_000_001)
    y = np.where(x > 0, x, a * x)
    pdf = stats.norm.pdf(x)
    mean = np.trapezoid(y * pdf, x)
    assert c2 == pytest.approx(mean, abs=1e-7)
    assert c1 == pytest.approx(math.sqrt(np.trapezoid((y - mean) ** 2 * pdf, x)), abs=1e-7)


def test_leaky_relu_uses_remark_2_with_keras_slope():
    assert activation_moments("leaky_relu") == pytest.approx(prelu_moments(0.2), abs=1e-15)


@pytest.mark.tensorflow_only
def test_learnable_prelu_constants_have_gradients():
    alpha = tf.Variable([0.25, -0.1])
    with tf.GradientTape(persistent=True) as tape:
        c2, c1 = prelu_moments(alpha)
    assert_allclose(tape.gradient(c2, alpha), [-1 / math.sqrt(2 * math.pi)] * 2, rtol=1e-6)
    h = 1e-4
    numeric = [(prelu_moments(a + h)[1] - prelu_moments(a - h)[1]) / (2 * h) for a in (0.25, -0.1)]
    assert_allclose(tape.gradient(c1, alpha), numeric, rtol=1e-3)


@pytest.mark.parametrize("name", QUADRATURE_ACTIVATIONS)
def test_quadrature_matches_an_independent_integral_to_1e_6(name):
    c2, c1 = activation_moments(name)
    mean, std = _scipy_moments(name)
    assert abs(c2 - mean) < 1e-6 and abs(c1 - std) < 1e-6


@pytest.mark.parametrize("name", ["tanh", "gelu", "selu", "softplus"])
def test_quadrature_agrees_with_monte_carlo(name):
    """4e6 samples: standard errors ~5e-4, so agreement within 5 of them."""
    u = np.random.default_rng(0).standard_normal(4_000_000)
    y = keras.ops.convert_to_numpy(
        keras.activations.get(name)(keras.ops.convert_to_tensor(u, "float64"))
    )
    c2, c1 = activation_moments(name)
    standard_error = y.std() / math.sqrt(len(y))
    assert abs(c2 - y.mean()) < 5 * standard_error
    assert abs(c1 - y.std()) < 5 * standard_error * math.sqrt(2)


def test_selu_is_self_normalizing():
    """SELU's constants are chosen for mean 0 and variance 1 on N(0, 1)."""
    c2, c1 = activation_moments("selu")
    assert abs(c2) < 1e-4 and abs(c1 - 1) < 1e-4


def test_linear_and_none_are_identity():
    # 1e-8: JAX evaluates the activation in float32-rounded float64 by default.
    assert activation_moments(None) == pytest.approx((0.0, 1.0), abs=1e-8)
    # JAX evaluates in float32 unless jax_enable_x64: the central difference loses digits.
    derivative_tolerance = 1e-3 if keras.backend.backend() == "jax" else 1e-8
    assert jacobian_factor("linear") == pytest.approx(1.0, abs=derivative_tolerance)


def test_relu_jacobian_factor_is_the_papers_1_21():
    factor = jacobian_factor("relu")
    assert factor == pytest.approx(math.sqrt(0.5) / math.sqrt(0.5 * (1 - 1 / math.pi)))
    assert round(factor, 2) == 1.21


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("name", ["tanh", "gelu", "elu"])
def test_jacobian_factor_of_smooth_activations(name):
    f = keras.activations.get(name)

    def derivative(x):
        t = tf.constant([x], tf.float64)
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = f(t)
        return float(tape.gradient(y, t)[0])

    second_moment = integrate.quad(
        lambda x: derivative(x) ** 2 * stats.norm.pdf(x), -12, 12, limit=200
    )[0]
    expected = math.sqrt(second_moment) / activation_moments(name)[1]
    assert jacobian_factor(name) == pytest.approx(expected, abs=1e-6)


def test_prelu_jacobian_factor():
    assert prelu_jacobian_factor(0.0) == pytest.approx(jacobian_factor("relu"))
    assert prelu_jacobian_factor(1.0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "activation, match",
    [
        ("softmax", "expects an elementwise activation.*Received: activation='softmax'"),
        ("glu", "expects an elementwise activation.*Received: activation='glu'"),
        (
            "not_an_activation",
            "expects a Keras activation.*Received: activation='not_an_activation'",
        ),
        (lambda x: 0.0 * x, "non-constant activation"),
    ],
)
def test_rejects_unusable_activations(activation, match):
    with pytest.raises(ValueError, match=match):
        activation_moments(activation)
