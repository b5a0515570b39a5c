"""NormPropDense and NormPropConv2D against Arpit et al. 2016 (eq. 9, 11, 12; sections 3.3-4.4)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_norms.gaussian_moments import prelu_moments
from keras_norms.layers import NormPropConv2D, NormPropDense
from tests.layer_test_helper import (
    assert_allclose,
    assert_array_equal,
    numpy,
    numpy_conv2d_valid,
    run_layer_test,
)

C2 = 1 / math.sqrt(2 * math.pi)
C1 = math.sqrt(0.5 * (1 - 1 / math.pi))


def _randomize(layer, rng):
    layer.kernel.assign(rng.normal(scale=2.0, size=layer.kernel.shape))
    layer.gamma.assign(rng.uniform(0.5, 1.5, size=layer.gamma.shape))
    layer.beta.assign(rng.normal(scale=0.3, size=layer.beta.shape))
    if layer.alpha is not None:
        layer.alpha.assign(rng.uniform(-0.3, 0.5, size=layer.alpha.shape))


def _numpy_normprop(u_raw, w_norm, gamma, beta, activation, alpha=None):
    """Eq. 9/12: (f(gamma * u / ||W_i|| + beta) - c2) / c1."""
    pre = gamma * u_raw / w_norm + beta
    if activation is None:
        return pre
    if activation == "relu":
        return (np.maximum(pre, 0) - C2) / C1
    if activation == "prelu":
        c2, c1 = (
            (1 - alpha) / math.sqrt(2 * math.pi),
            np.sqrt(0.5 * ((1 + alpha**2) - (1 - alpha) ** 2 / math.pi)),
        )
        return (np.where(pre > 0, pre, alpha * pre) - c2) / c1
    raise AssertionError(activation)


@pytest.mark.parametrize("activation", ["relu", "prelu", None])
def test_dense_matches_numpy_reference(activation):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5)).astype("float32")
    layer = NormPropDense(4, activation=activation)
    layer.build(x.shape)
    _randomize(layer, rng)
    w = layer.kernel.numpy().astype("float64")
    alpha = None if layer.alpha is None else layer.alpha.numpy()
    expected = _numpy_normprop(
        x @ w, np.linalg.norm(w, axis=0), layer.gamma.numpy(), layer.beta.numpy(), activation, alpha
    )
    assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_dense_with_a_quadrature_activation():
    from keras_norms import activation_moments

    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 5)).astype("float32")
    layer = NormPropDense(3, activation="tanh")
    layer.build(x.shape)
    _randomize(layer, rng)
    w = layer.kernel.numpy().astype("float64")
    pre = layer.gamma.numpy() * (x @ w) / np.linalg.norm(w, axis=0) + layer.beta.numpy()
    c2, c1 = activation_moments("tanh")
    assert_allclose(layer(x), (np.tanh(pre) - c2) / c1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "prelu"])
def test_conv2d_matches_numpy_reference(activation):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 7, 7, 3)).astype("float32")
    layer = NormPropConv2D(4, 3, activation=activation)
    layer.build(x.shape)
    _randomize(layer, rng)
    w = layer.kernel.numpy().astype("float64")
    norms = np.sqrt((w**2).sum(axis=(0, 1, 2)))  # Frobenius norm per filter over (kh, kw, C_in)
    alpha = None if layer.alpha is None else layer.alpha.numpy()
    expected = _numpy_normprop(
        numpy_conv2d_valid(x.astype("float64"), w),
        norms,
        layer.gamma.numpy(),
        layer.beta.numpy(),
        activation,
        alpha,
    )
    assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_gamma_starts_at_the_inverse_jacobian_factor():
    layer = NormPropDense(3)
    layer.build((None, 4))
    assert_allclose(layer.gamma.numpy(), 1 / (math.sqrt(0.5) / C1), rtol=1e-6)
    assert 1 / layer.gamma.numpy()[0] == pytest.approx(1.21, abs=0.005)
    prelu = NormPropDense(3, activation="prelu")
    prelu.build((None, 4))
    assert_allclose(prelu.alpha.numpy(), 0.25)
    assert prelu.gamma.numpy()[0] == pytest.approx(
        prelu_moments(0.25)[1] / math.sqrt((1 + 0.25**2) / 2)
    )


def test_kernels_have_unit_norm_after_fit():
    rng = np.random.default_rng(3)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            NormPropConv2D(5, 3, kernel_initializer=keras.initializers.RandomNormal(stddev=3.0)),
            keras.layers.Flatten(),
            NormPropDense(4),
            NormPropDense(2, activation=None),
        ]
    )
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    model.fit(
        rng.normal(size=(32, 6, 6, 2)), rng.normal(size=(32, 2)), batch_size=8, epochs=2, verbose=0
    )
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            w = layer.kernel.numpy()
            norms = np.sqrt((w**2).reshape(-1, w.shape[-1]).sum(axis=0))
            assert_allclose(norms, 1.0, atol=1e-5)


def _normprop_net(rng_seed=4):
    keras.utils.set_random_seed(rng_seed)
    return keras.Sequential(
        [
            keras.Input((8,)),
            NormPropDense(16),
            NormPropDense(16, activation="prelu"),
            NormPropDense(3, activation=None),
        ]
    )


def test_training_and_inference_compute_the_same_function():
    model = _normprop_net()
    x = np.random.default_rng(5).normal(size=(7, 8)).astype("float32")
    assert_array_equal(model(x, training=True), model(x, training=False))


def test_batch_size_one_training_lowers_the_loss():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(40, 8)).astype("float32")
    y = (x[:, :3] > 0).argmax(axis=1)
    model = _normprop_net()
    # Plain SGD: with momentum 0.9 at batch size 1 the loss oscillates on every backend.
    model.compile(
        keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=1, epochs=2, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.8 * before


def _hidden_input_stats(layers, x):
    """Per-layer (mean over units of the unit mean, mean over units of the unit variance)."""
    stats = []
    for layer in layers:
        x = layer(x)
        flat = numpy(x, "float64").reshape(-1, x.shape[-1])
        stats.append((flat.mean(axis=0).mean(), flat.var(axis=0).mean()))
    return stats[:-1]  # inputs of layers 2..10


@pytest.mark.parametrize("kind", ["dense", "conv2d"])
def test_normprop_propagates_the_input_distribution(kind):
    """Proposition 1 / section 3.3: every hidden layer's input stays ~N(0, 1).

    10 ReLU layers with gamma = 1 at initialization, N(0, 1) input. The
    tolerance of 0.1 covers the finite sample (2,048 rows or 32 images) and
    the coherence of random rows (Proposition 1's bound, ~1/sqrt(fan-in)).
    """
    keras.utils.set_random_seed(7)
    if kind == "dense":
        x = np.random.default_rng(8).normal(size=(2048, 256)).astype("float32")
        make = lambda: NormPropDense(256, gamma_initializer="ones")  # noqa: E731
        plain = lambda: keras.layers.Dense(256, activation="relu")  # noqa: E731
    else:
        x = np.random.default_rng(8).normal(size=(32, 24, 24, 64)).astype("float32")
        make = lambda: NormPropConv2D(64, 3, gamma_initializer="ones")  # noqa: E731
        plain = lambda: keras.layers.Conv2D(64, 3, activation="relu")  # noqa: E731
    normprop_stats = _hidden_input_stats([make() for _ in range(10)], x)
    for mean, variance in normprop_stats:
        assert abs(mean) < 0.1 and abs(variance - 1) < 0.1, normprop_stats
    plain_stats = _hidden_input_stats([plain() for _ in range(10)], x)
    assert max(abs(m) + abs(v - 1) for m, v in plain_stats[-3:]) > 0.3, plain_stats


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("gamma, within", [(None, True), ("ones", False)])
def test_jacobian_mean_squared_singular_value(gamma, within):
    """Section 3.4: with gamma = 1/1.21 the Jacobian's singular values are ~1."""
    keras.utils.set_random_seed(9)
    kwargs = {} if gamma is None else {"gamma_initializer": gamma}
    layer = NormPropDense(256, **kwargs)
    x = tf.constant(np.random.default_rng(10).normal(size=(64, 256)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    jacobians = tape.batch_jacobian(y, x).numpy()
    mean_squared = np.mean([np.mean(np.linalg.svd(j, compute_uv=False) ** 2) for j in jacobians])
    assert (abs(mean_squared - 1) < 0.1) == within, mean_squared


@pytest.mark.parametrize(
    "make_layer, input_shape, output_shape, trainable",
    [
        (lambda: NormPropDense(3), (5,), (3,), 3),
        (lambda: NormPropDense(3, activation="prelu"), (5,), (3,), 4),
        (lambda: NormPropConv2D(4, 3, padding="same", activation="gelu"), (6, 6, 2), (6, 6, 4), 3),
        (lambda: NormPropConv2D(2, (3, 2), strides=2, activation=None), (7, 7, 3), (3, 3, 2), 3),
    ],
)
def test_layer_test_helper(make_layer, input_shape, output_shape, trainable, tmp_path):
    run_layer_test(make_layer, input_shape, output_shape, trainable, 0, str(tmp_path))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: NormPropDense(0), "NormPropDense expects `units` to be a positive integer"),
        (lambda: NormPropConv2D(-1, 3), "NormPropConv2D.*Received: filters=-1"),
        (lambda: NormPropConv2D(4, (3, 0)), r"NormPropConv2D.*Received: kernel_size=\(3, 0\)"),
        # Conv2D's arguments, checked before Conv2D's own messages (which name no layer).
        (
            lambda: NormPropConv2D(4, 3, padding=None),
            r"NormPropConv2D expects `padding` to be one of 'valid', 'same'\. "
            r"Received: padding=None$",
        ),
        (
            lambda: NormPropConv2D(4, 3, padding="causal"),
            "NormPropConv2D.*Received: padding='causal'$",
        ),
        (
            lambda: NormPropConv2D(4, 3, padding=((1, 1), (1, 1))),
            r"NormPropConv2D.*Received: padding=\(\(1, 1\), \(1, 1\)\)$",
        ),
        (
            lambda: NormPropConv2D(4, 3, data_format="NCHW"),
            r"NormPropConv2D expects `data_format` to be None or one of 'channels_last', "
            r"'channels_first'\. Received: data_format='NCHW'$",
        ),
        (lambda: NormPropConv2D(4, 3, groups=0), "NormPropConv2D.*Received: groups=0$"),
        (
            lambda: NormPropConv2D(4, 3, groups=3),
            "NormPropConv2D expects `filters` to be a multiple of `groups`. "
            "Received: filters=4, groups=3$",
        ),
        (lambda: NormPropDense(4, activation="softmax"), "NormPropDense: .*elementwise activation"),
        (lambda: NormPropConv2D(4, 3, activation="softmax"), "NormPropConv2D: .*elementwise"),
        (lambda: NormPropDense(4, activation=keras.ops.sign), "NormPropDense: .*derivative"),
    ],
)
def test_rejects_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("padding, data_format", [("SAME", "Channels_Last"), ("Valid", None)])
def test_padding_and_data_format_are_read_in_any_case_as_conv2d_reads_them(padding, data_format):
    layer = NormPropConv2D(4, 3, padding=padding, data_format=data_format)
    assert layer.padding == padding.lower()
    assert layer.data_format == keras.layers.Conv2D(4, 3, data_format=data_format).data_format


def test_rejects_inputs_without_channels():
    with pytest.raises(ValueError, match=r"NormPropConv2D.*rank-4.*Received: input_shape"):
        NormPropConv2D(4, 3)(keras.Input((5, 3)))


@pytest.mark.parametrize("activation", ["relu", "prelu", None])
def test_conv2d_channels_first_matches_numpy_reference(activation):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2, 7, 6, 3)).astype("float32")
    layer = NormPropConv2D(4, 3, activation=activation, data_format="channels_first")
    layer.build((None, 3, 7, 6))
    _randomize(layer, rng)
    w = layer.kernel.numpy().astype("float64")
    norms = np.sqrt((w**2).sum(axis=(0, 1, 2)))
    alpha = None if layer.alpha is None else layer.alpha.numpy()
    expected = _numpy_normprop(
        numpy_conv2d_valid(x.astype("float64"), w),
        norms,
        layer.gamma.numpy(),
        layer.beta.numpy(),
        activation,
        alpha,
    )
    outputs = layer(np.transpose(x, (0, 3, 1, 2)))
    assert_allclose(np.transpose(numpy(outputs), (0, 2, 3, 1)), expected, rtol=1e-5, atol=1e-5)


def test_conv2d_inherits_dilation_and_groups_from_conv2d():
    """||W_i|| over (kh, kw, C_in / groups); the product is Conv2D's, kernel gamma W / ||W_i||."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(2, 9, 9, 4)).astype("float32")
    layer = NormPropConv2D(6, 3, dilation_rate=2, groups=2, activation=None)
    layer.build(x.shape)
    _randomize(layer, rng)
    w = layer.kernel.numpy().astype("float64")  # (3, 3, 2, 6)
    assert w.shape == (3, 3, 2, 6)
    kernel = layer.gamma.numpy() * w / np.sqrt((w**2).sum(axis=(0, 1, 2)))
    dilated = np.zeros((5, 5, 2, 6))
    dilated[::2, ::2] = kernel
    x64 = x.astype("float64")
    expected = (
        np.concatenate(
            [
                numpy_conv2d_valid(x64[..., 2 * g : 2 * g + 2], dilated[..., 3 * g : 3 * g + 3])
                for g in (0, 1)
            ],
            axis=-1,
        )
        + layer.beta.numpy()
    )
    assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)


PLAIN_CASES = [
    (lambda a: NormPropDense(4, activation=a), (6, 5)),
    (lambda a: NormPropDense(4, activation=a), (3, 2, 5)),  # rank 3: PReLU shared over axis 1
    (lambda a: NormPropConv2D(4, 3, padding="same", activation=a), (2, 6, 5, 3)),
    (
        lambda a: NormPropConv2D(4, 3, strides=2, activation=a, data_format="channels_first"),
        (2, 3, 7, 6),
    ),
]


@pytest.mark.parametrize("activation", [None, "relu", "tanh", "prelu"])
@pytest.mark.parametrize("make, shape", PLAIN_CASES)
def test_plain_layer_computes_the_same_function(make, shape, activation):
    rng = np.random.default_rng(13)
    layer = make(activation)
    layer.build(shape)
    _randomize(layer, rng)
    x = rng.normal(size=shape).astype("float32")
    plain = layer.plain_layer()
    assert plain.name == layer.name and plain.built
    assert {w.dtype for w in plain.weights} == {"float32"}
    assert_allclose(plain(x), layer(x), rtol=1e-5, atol=1e-5)
    core = plain if activation is None else plain.layers[0]
    assert type(core) is (
        keras.layers.Dense if isinstance(layer, NormPropDense) else keras.layers.Conv2D
    )
    if activation is None:
        # Kernel gamma W / ||W_i|| and bias beta (eq. 9 without the activation step).
        w = layer.kernel.numpy().astype("float64")
        axes = tuple(range(w.ndim - 1))
        expected = layer.gamma.numpy() * w / np.sqrt((w**2).sum(axis=axes, keepdims=True))
        assert_allclose(plain.kernel, expected, rtol=1e-6, atol=1e-7)
        assert_allclose(plain.bias, layer.beta.numpy(), rtol=0, atol=0)
    else:
        kinds = [type(part) for part in plain.layers]
        middle = [keras.layers.PReLU] if activation == "prelu" else []
        assert kinds == [type(core)] + middle + [keras.layers.Rescaling]


def test_plain_layer_restandardizes_with_the_constants_of_eq_12():
    layer = NormPropDense(3, activation="relu")
    layer.build((None, 4))
    shift = layer.plain_layer().layers[-1]
    assert shift.scale == pytest.approx(1 / C1) and shift.offset == pytest.approx(-C2 / C1)


def test_plain_layer_needs_a_built_layer():
    with pytest.raises(
        ValueError, match=r"plain_layer needs a built layer\. Received: built=False"
    ):
        NormPropConv2D(4, 3).plain_layer()


def test_plain_layer_of_a_saved_and_reloaded_model(tmp_path):
    """The input shape `plain_layer` builds on survives a .keras round trip."""
    model = keras.Sequential([keras.Input((3, 5)), NormPropDense(4, activation="prelu")])
    rng = np.random.default_rng(14)
    _randomize(model.layers[0], rng)
    path = str(tmp_path / "normprop.keras")
    model.save(path)
    layer = keras.saving.load_model(path).layers[0]
    x = rng.normal(size=(2, 3, 5)).astype("float32")
    assert_allclose(layer.plain_layer()(x), model(x), rtol=1e-5, atol=1e-5)
