"""Moments of an activation of a standard normal, and the Jacobian factor.

NormProp (Arpit et al. 2016, arXiv:1603.01431) needs, for an activation `f` and `u ~ N(0, 1)`,
the mean `c2 = E[f(u)]` and standard deviation `c1 = sqrt(var f(u))` of the
post-activation (section 4.6, eq. 12), and the Jacobian factor
`sqrt(E[f'(u)^2]) / c1` (section 3.4: 1.21 for ReLU).
"""

import functools
import math
import warnings

import keras
import numpy as np
from keras import ops

# Composite Gauss-Legendre quadrature of the normal density on [-12, 12]
# (the mass outside is 4e-33), with a breakpoint every 0.5: every kink or
# jump of Keras' piecewise activations (0, +-0.5, +-1, +-3, 6) is a
# breakpoint, so each piece is smooth and the rule converges spectrally.
# Gauss-Hermite on the whole line is not used: it converges slowly across
# kinks (error ~6e-4 for SELU with 200 nodes).
_LIMIT = 12.0
_PIECE = 0.5
_NODES_PER_PIECE = 16
# Central-difference step for f' in float64.
_STEP = 1e-5


@functools.lru_cache(maxsize=1)
def _quadrature():
    nodes, weights = np.polynomial.legendre.leggauss(_NODES_PER_PIECE)
    edges = np.arange(-_LIMIT, _LIMIT + _PIECE / 2, _PIECE)
    lo, hi = edges[:-1, None], edges[1:, None]
    x = ((hi - lo) / 2 * nodes + (hi + lo) / 2).ravel()
    w = ((hi - lo) / 2 * weights).ravel() * np.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)
    return x, w


def prelu_moments(alpha):
    """`(c2, c1)` of PReLU with slope `alpha` (Remark 2), differentiable in `alpha`.

    `c2 = (1 - a) / sqrt(2 pi)`, `c1 = sqrt(((1 + a^2) - (1 - a)^2 / pi) / 2)`.
    `alpha` may be a float or a tensor (e.g. a learnable per-channel slope);
    the result has its shape and dtype.
    """
    if isinstance(alpha, (int, float)):
        a = float(alpha)
        c1 = math.sqrt(0.5 * ((1 + a * a) - (1 - a) ** 2 / math.pi))
        return (1 - a) / math.sqrt(2 * math.pi), c1
    c2 = (1.0 - alpha) / math.sqrt(2.0 * math.pi)
    c1 = ops.sqrt(0.5 * ((1.0 + ops.square(alpha)) - ops.square(1.0 - alpha) / math.pi))
    return c2, c1


def prelu_jacobian_factor(alpha):
    """`sqrt((1 + a^2) / 2) / c1(a)`: the Jacobian factor of PReLU (section 3.4)."""
    return math.sqrt((1 + alpha**2) / 2) / prelu_moments(alpha)[1]


def _resolve(activation):
    """The activation callable, or a ValueError that names what was received."""
    if activation is None:
        return keras.activations.linear
    try:
        function = keras.activations.get(activation)
    except (ValueError, TypeError):
        function = None
    if function is None or not callable(function):
        raise ValueError(
            "activation_moments expects a Keras activation (a name such as "
            f"'relu', 'tanh' or 'gelu', or a callable). Received: activation={activation!r}"
        )
    return function


def _evaluate(function, x):
    return ops.convert_to_numpy(function(ops.convert_to_tensor(x, "float64"))).astype("float64")


def _check_elementwise(function, activation):
    """Elementwise: the same values on a column and on a row of points."""
    points = _quadrature()[0][::97]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # softmax warns about a size-1 axis
            column = _evaluate(function, points.reshape(-1, 1))
            row = _evaluate(function, points.reshape(1, -1))
        elementwise = column.shape == (points.size, 1) and np.allclose(column.ravel(), row.ravel())
    # glu needs an even last axis: ValueError, AssertionError (JAX), RuntimeError (torch).
    except Exception:
        elementwise = False
    if not elementwise:
        raise ValueError(
            "activation_moments expects an elementwise activation; this one mixes "
            f"elements (like softmax). Received: activation={activation!r}"
        )


def _closed_form_slope(function):
    """Negative slope of ReLU (0) and Keras' leaky ReLU, else None."""
    if function is keras.activations.relu:
        return 0.0
    if function is keras.activations.leaky_relu:
        return 0.2  # Keras' default negative_slope
    return None


def _numeric(activation):
    function = _resolve(activation)
    _check_elementwise(function, activation)
    x, w = _quadrature()
    values = _evaluate(function, x)
    if not np.all(np.isfinite(values)):
        raise ValueError(
            "activation_moments needs an activation that is finite on [-12, 12]. "
            f"Received: activation={activation!r}"
        )
    return function, x, w, values


def activation_moments(activation):
    """Mean `c2` and standard deviation `c1` of `f(u)` for `u ~ N(0, 1)`.

    Closed forms for ReLU (Remark 1) and leaky ReLU (Remark 2 with Keras'
    slope 0.2); composite Gauss-Legendre quadrature of the normal density
    (float64, error below 1e-9) for any other elementwise Keras activation
    (tanh, sigmoid, elu, selu, gelu, softplus, swish, ...). The activation
    runs on the Keras backend: JAX without `jax_enable_x64` evaluates it in
    float32, which leaves errors near 1e-7 here.

    Args:
        activation: a Keras activation name or callable; `None` or
            `"linear"` gives `(0.0, 1.0)`.

    Returns:
        `(c2, c1)` as Python floats.

    Raises:
        ValueError: for an unknown name, a non-elementwise activation
            (softmax, glu, ...), a non-finite one, or a constant one (c1 = 0).

    Reference:
        Arpit et al., "Normalization Propagation", ICML 2016
        (arXiv:1603.01431), Remarks 1-2, section 4.6 eq. 12.
    """
    function = _resolve(activation)
    slope = _closed_form_slope(function)
    if slope is not None:
        return prelu_moments(slope)
    _, _, w, values = _numeric(activation)
    mean = float(np.sum(w * values))
    std = float(np.sqrt(max(np.sum(w * (values - mean) ** 2), 0.0)))
    if std == 0.0:
        raise ValueError(
            "activation_moments needs a non-constant activation (its standard "
            f"deviation is 0). Received: activation={activation!r}"
        )
    return mean, std


def jacobian_factor(activation):
    """NormProp's Jacobian factor `sqrt(E[f'(u)^2]) / c1`, `u ~ N(0, 1)`.

    Section 3.4's argument for one NormProp layer `o = (f(W~ x) - c2) / c1`
    with unit-norm, incoherent rows of `W~` and `x ~ N(0, I)`: the Jacobian
    is `J = diag(f'(u)) W~ / c1`, so `E[J J^T] ~ E[f'(u)^2] / c1^2 I` and each
    singular value is about `sqrt(E[f'(u)^2]) / c1`. For ReLU,
    `E[f'^2] = 1/2` and the factor is `sqrt(1/2) / c1 = 1.2113` (the
    paper's 1.21); for PReLU with slope a, `E[f'^2] = (1 + a^2) / 2`.
    NormProp initializes `gamma` to its inverse. `f'` is a float64 central
    difference for activations without a closed form (error below 1e-8; on
    JAX without `jax_enable_x64` the activation runs in float32 and the
    difference is good to about 1e-3).

    Raises:
        ValueError: as `activation_moments`, and for an activation whose
            derivative is zero almost everywhere (a factor of 0).
    """
    function = _resolve(activation)
    slope = _closed_form_slope(function)
    if slope is not None:
        return prelu_jacobian_factor(slope)
    _, x, w, _ = _numeric(activation)
    _, c1 = activation_moments(activation)
    derivative = (_evaluate(function, x + _STEP) - _evaluate(function, x - _STEP)) / (2 * _STEP)
    factor = float(np.sqrt(np.sum(w * derivative**2)) / c1)
    if factor == 0.0:
        raise ValueError(
            "jacobian_factor needs an activation whose derivative is not zero almost "
            "everywhere (a step function such as sign passes no gradient, and NormProp's "
            f"initial gamma = 1 / factor is undefined). Received: activation={activation!r}"
        )
    return factor
