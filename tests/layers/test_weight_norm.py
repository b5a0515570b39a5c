"""WeightNormalization against numpy references of Salimans & Kingma 2016, eq. 2-3."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_norms.graph import iter_layers
from keras_norms.layers import NormalizedConv2D, NormPropConv2D, WeightNormalization
from tests.layer_test_helper import assert_allclose, dtype_policy, numpy, run_layer_test


def _numpy_wn_kernel(v, g, out_axis=-1):
    """Paper eq. 2: w = g * v / ||v||, norm over every axis but `out_axis`."""
    v = numpy(v, "float64")
    axes = tuple(a for a in range(v.ndim) if a != v.ndim + out_axis)
    g_shape = [1] * v.ndim
    g_shape[out_axis] = -1
    return numpy(g).reshape(g_shape) * v / np.sqrt(np.sum(v**2, axis=axes, keepdims=True))


def _randomize(wn, rng):
    """Give v, g and the bias random values far from their defaults."""
    wn.layer.kernel.assign(rng.normal(scale=3.0, size=wn.layer.kernel.shape))
    wn.g.assign(rng.uniform(0.5, 2.0, size=wn.g.shape))
    if wn.layer.use_bias:
        wn.layer.bias.assign(rng.normal(size=wn.layer.bias.shape))


def test_dense_forward_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7)).astype("float32")
    wn = WeightNormalization(keras.layers.Dense(3, activation="tanh"))
    wn.build(x.shape)
    _randomize(wn, rng)
    w = _numpy_wn_kernel(wn.layer.kernel.numpy(), wn.g.numpy())
    expected = np.tanh(x @ w + wn.layer.bias.numpy())
    assert_allclose(wn(x), expected, rtol=1e-5, atol=1e-6)
    # Every output unit's weight vector has norm g (eq. 2: ||w|| = g).
    assert_allclose(np.linalg.norm(numpy(wn.kernel), axis=0), wn.g.numpy(), rtol=1e-6)


CONV_CASES = [
    (
        keras.layers.Conv1D,
        dict(filters=4, kernel_size=3, padding="causal", dilation_rate=2),
        (9, 3),
        -1,
    ),
    (keras.layers.Conv2D, dict(filters=4, kernel_size=3, strides=2, padding="same"), (8, 8, 3), -1),
    (
        keras.layers.Conv2D,
        dict(filters=4, kernel_size=3, data_format="channels_first"),
        (3, 8, 8),
        -1,
    ),
    (keras.layers.Conv2D, dict(filters=6, kernel_size=3, groups=3, padding="same"), (6, 6, 6), -1),
    (keras.layers.Conv3D, dict(filters=2, kernel_size=2), (4, 4, 4, 2), -1),
    (keras.layers.Conv2DTranspose, dict(filters=5, kernel_size=3, strides=2), (5, 5, 3), -2),
    (
        keras.layers.Conv1DTranspose,
        dict(filters=2, kernel_size=4, strides=3, padding="same"),
        (6, 3),
        -2,
    ),
]


@pytest.mark.parametrize("layer_cls, kwargs, input_shape, out_axis", CONV_CASES)
def test_conv_forward_equals_plain_layer_with_numpy_kernel(
    layer_cls, kwargs, input_shape, out_axis
):
    """The wrapped layer computes what Keras' own layer computes with w = g v/||v||."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2,) + input_shape).astype("float32")
    wn = WeightNormalization(layer_cls(**kwargs))
    wn.build(x.shape)
    _randomize(wn, rng)
    plain = layer_cls(**kwargs)
    plain.build(x.shape)
    plain.set_weights(
        [
            _numpy_wn_kernel(wn.layer.kernel.numpy(), wn.g.numpy(), out_axis).astype("float32"),
            wn.layer.bias.numpy(),
        ]
    )
    assert_allclose(wn(x), plain(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer_cls, kwargs, input_shape, out_axis", CONV_CASES)
def test_without_data_init_wrapping_leaves_the_output_unchanged(
    layer_cls, kwargs, input_shape, out_axis
):
    x = np.random.default_rng(2).normal(size=(2,) + input_shape).astype("float32")
    layer = layer_cls(**kwargs)
    before = numpy(layer(x))
    wn = WeightNormalization(layer, data_init=False)
    assert_allclose(wn(x), before, rtol=1e-5, atol=1e-5)


def test_log_scale_parameterizes_g_as_exp_s():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 5)).astype("float32")
    dense = keras.layers.Dense(3)
    before = numpy(dense(x))
    wn = WeightNormalization(dense, log_scale=True)
    assert_allclose(wn(x), before, rtol=1e-5, atol=1e-5)
    assert_allclose(np.exp(wn.g.numpy()), np.linalg.norm(dense.kernel.numpy(), axis=0), rtol=1e-6)
    wn.g.assign([0.0, np.log(2.0), -1.0])
    w = _numpy_wn_kernel(dense.kernel.numpy(), np.exp([0.0, np.log(2.0), -1.0]))
    assert_allclose(wn(x), x @ w + dense.bias.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.tensorflow_only
def test_gradients_match_the_papers_formulas():
    """Paper eq. 3: grad_g = grad_w . v/||v||, grad_v = g/||v|| grad_w - g grad_g/||v||^2 v."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 5)).astype("float32")
    target = rng.normal(size=(6, 3)).astype("float32")
    wn = WeightNormalization(keras.layers.Dense(3, use_bias=False))
    wn.build(x.shape)
    _randomize(wn, rng)
    v = wn.layer.kernel.numpy().astype("float64")
    g = wn.g.numpy().astype("float64")
    w = tf.Variable(_numpy_wn_kernel(v, g).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum((x @ w - target) ** 2)
    grad_w = tape.gradient(loss, w).numpy().astype("float64")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum((wn(x) - target) ** 2)
    grad_v, grad_g = tape.gradient(loss, [wn.layer.kernel, wn.g])
    norm = np.linalg.norm(v, axis=0)
    expected_grad_g = np.sum(grad_w * v, axis=0) / norm
    expected_grad_v = g / norm * grad_w - g * expected_grad_g / norm**2 * v
    assert_allclose(grad_g, expected_grad_g, rtol=1e-4, atol=1e-5)
    assert_allclose(grad_v, expected_grad_v, rtol=1e-4, atol=1e-5)


def test_mixed_precision_computes_the_kernel_in_float32():
    x = np.random.default_rng(5).normal(size=(4, 8, 8, 3)).astype("float32")
    reference = WeightNormalization(keras.layers.Conv2D(4, 3))
    expected = numpy(reference(x))
    with dtype_policy("mixed_float16"):
        wn = WeightNormalization(keras.layers.Conv2D(4, 3))
        wn.build(x.shape)
        wn.set_weights(reference.get_weights())
        y = wn(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert {v.dtype for v in wn.weights if v.dtype != "bool"} == {"float32"}
    assert_allclose(numpy(y, "float32"), expected, rtol=1e-2, atol=1e-2)


def test_large_kernels_do_not_overflow_in_float16():
    """||v||^2 = 3*3*512*300^2 ~ 4e8 exceeds float16's range (65504); w does not."""
    with dtype_policy("mixed_float16"):
        wn = WeightNormalization(
            keras.layers.Conv2D(2, 3, kernel_initializer=keras.initializers.Constant(300.0))
        )
        x = np.ones((1, 3, 3, 512), "float32")
        wn.build(x.shape)
        wn.g.assign(np.ones(2))
        y = numpy(wn(x), "float32")
    # Unit-norm constant kernel on ones: sum of n entries 1/sqrt(n) = sqrt(n).
    assert_allclose(y, np.sqrt(3 * 3 * 512), rtol=1e-3)


@pytest.mark.parametrize(
    "make_layer, input_shape, output_shape",
    [
        (lambda: WeightNormalization(keras.layers.Dense(3, activation="relu")), (5,), (3,)),
        (
            lambda: WeightNormalization(keras.layers.Conv2D(4, 3, padding="same")),
            (6, 6, 2),
            (6, 6, 4),
        ),
        (
            lambda: WeightNormalization(keras.layers.Conv2DTranspose(2, 3), log_scale=True),
            (4, 4, 3),
            (6, 6, 2),
        ),
    ],
)
def test_layer_test_helper(make_layer, input_shape, output_shape, tmp_path):
    # Trainable: v (kernel), bias, g; non-trainable: the `initialized` flag.
    run_layer_test(make_layer, input_shape, output_shape, 3, 1, str(tmp_path))


def test_rejects_a_layer_without_kernel():
    with pytest.raises(ValueError, match="kernel_names=.*Received: layer=dropout of type Dropout"):
        WeightNormalization(keras.layers.Dropout(0.5, name="dropout"))


def test_rejects_a_non_layer():
    with pytest.raises(TypeError, match="expects a Keras layer.*Received"):
        WeightNormalization("dense")


L = keras.layers


@pytest.mark.parametrize(
    "make_inner, shape, match",
    [
        # The rank the wrapped layer's input_spec asks for, checked before its build.
        (
            lambda: L.Conv2D(4, 3, name="conv"),
            (1, 8, 8),
            r"WeightNormalization expects an input of rank 4 or more for the wrapped layer "
            r"conv of type Conv2D \(its input_spec\)\. Received: input_shape=\(1, 8, 8\)$",
        ),
        (lambda: L.Conv1D(4, 3), (1, 8), r"rank 3 or more .* Conv1D.*input_shape=\(1, 8\)$"),
        (lambda: L.Dense(4), (3,), r"rank 2 or more .* Dense.*Received: input_shape=\(3,\)$"),
        (lambda: L.LSTM(4), (2, 3), r"rank 3 for .* LSTM.*Received: input_shape=\(2, 3\)$"),
        (lambda: L.SimpleRNN(4), (2, 3), r"rank 3 for .* SimpleRNN.*input_shape=\(2, 3\)$"),
        # A rank the input_spec allows but the wrapped layer's build refuses: its message inside.
        (
            lambda: L.Conv2D(4, 3, name="conv"),
            (1, 2, 8, 8, 3),
            r"WeightNormalization could not build the wrapped layer conv of type Conv2D on its "
            r"input: Kernel shape must have the same length as input.* "
            r"Received: input_shape=\(1, 2, 8, 8, 3\)$",
        ),
    ],
)
def test_an_input_of_a_rank_the_wrapped_layer_refuses_is_a_clear_error(make_inner, shape, match):
    with pytest.raises(ValueError, match=match):
        WeightNormalization(make_inner()).build(shape)
    with pytest.raises(ValueError, match=match):
        WeightNormalization(make_inner())(np.ones(shape, "float32"))
    with pytest.raises(ValueError, match=r"^WeightNormalization .*Received: input_shape=\(None,"):
        WeightNormalization(make_inner())(keras.Input(batch_shape=(None,) + shape[1:]))


# Integer inputs: a plain Conv2D refuses them on TensorFlow and PyTorch, not on JAX;
# a plain Dense and an Embedding take them everywhere.
NON_FLOAT_CASES = {
    "conv2d": (lambda: L.Conv2D(4, 3), (1, 8, 8, 3), "int32"),
    "conv1d": (lambda: L.Conv1D(4, 3), (1, 8, 3), "int32"),
    "depthwise": (lambda: L.DepthwiseConv2D(3), (1, 8, 8, 3), "bool"),
    "dense": (lambda: L.Dense(4), (2, 3), "int32"),
    "embedding": (lambda: L.Embedding(5, 4), (2, 3), "int32"),
}


@pytest.mark.parametrize("name", sorted(NON_FLOAT_CASES))
def test_a_non_float_input_works_as_unwrapped_or_is_a_clear_error(name):
    make_inner, shape, dtype = NON_FLOAT_CASES[name]
    x = np.ones(shape, dtype)
    try:
        expected = make_inner()(x)
    except Exception:  # noqa: BLE001 (each backend raises its own type)
        expected = None
    if keras.backend.backend() != "jax" and name.startswith("conv"):
        assert expected is None  # the case the wrapper must explain
    if expected is None:
        with pytest.raises(
            TypeError,
            match=r"WeightNormalization expects a float input for the wrapped layer .* of type "
            rf".*cast the input to float.*Received: dtype={dtype}",
        ):
            WeightNormalization(make_inner())(x)
    else:
        y = WeightNormalization(make_inner())(x)
        assert tuple(y.shape) == tuple(expected.shape)
        assert keras.backend.standardize_dtype(y.dtype) == "float32"


def test_an_embeddings_index_error_passes_unchanged():
    """An Embedding's input is indices: its errors are not about floats."""
    if keras.backend.backend() == "jax":
        pytest.skip("JAX gathers out-of-range indices without an error")
    with pytest.raises(Exception) as error:  # noqa: B017, PT011 (each backend its own)
        WeightNormalization(L.Embedding(5, 4))(np.array([[7]], "int32"))
    assert "cast the input to float" not in str(error.value)


PLAIN_CASES = [
    (keras.layers.Dense, dict(units=3, activation="tanh"), (5, 7)),
    (keras.layers.Dense, dict(units=3, use_bias=False), (2, 4, 7)),
    (
        keras.layers.Conv1D,
        dict(filters=4, kernel_size=3, padding="causal", dilation_rate=2),
        (2, 9, 3),
    ),
    (
        keras.layers.Conv2D,
        dict(filters=4, kernel_size=3, strides=2, data_format="channels_first"),
        (2, 3, 8, 8),
    ),
    (
        keras.layers.Conv2DTranspose,
        dict(filters=5, kernel_size=3, strides=2, padding="same"),
        (2, 5, 5, 3),
    ),
]


@pytest.mark.parametrize("layer_cls, kwargs, shape", PLAIN_CASES)
def test_plain_layer_computes_the_same_function(layer_cls, kwargs, shape):
    rng = np.random.default_rng(6)
    x = rng.normal(size=shape).astype("float32")
    wn = WeightNormalization(layer_cls(**kwargs), name="wn")
    wn.build(x.shape)
    _randomize(wn, rng)
    plain = wn.plain_layer()
    assert type(plain) is layer_cls and plain.name == "wn" and plain.use_bias and plain.built
    assert {w.dtype for w in plain.weights} == {"float32"}
    out_axis = -2 if layer_cls is keras.layers.Conv2DTranspose else -1
    assert_allclose(
        plain.kernel, _numpy_wn_kernel(wn.layer.kernel, wn.g, out_axis), rtol=1e-6, atol=1e-7
    )
    bias = wn.layer.bias if wn.layer.use_bias else np.zeros(plain.bias.shape)
    assert_allclose(plain.bias, bias, rtol=0, atol=0)
    assert_allclose(plain(x), wn(x), rtol=1e-6, atol=1e-6)


def test_plain_layer_of_a_mixed_precision_model_is_float32():
    x = np.random.default_rng(7).normal(size=(4, 5)).astype("float32")
    with dtype_policy("mixed_float16"):
        wn = WeightNormalization(keras.layers.Dense(3))
        wn.build(x.shape)
    plain = wn.plain_layer()
    assert plain.compute_dtype == "float32" and {w.dtype for w in plain.weights} == {"float32"}
    assert_allclose(plain(x), x @ numpy(wn.kernel) + numpy(wn.layer.bias), rtol=1e-6, atol=1e-6)


def test_plain_layer_needs_a_built_layer():
    with pytest.raises(ValueError, match="plain_layer needs a layer built"):
        WeightNormalization(keras.layers.Dense(3)).plain_layer()


class SubclassedModel(keras.Model):
    def __init__(self):
        super().__init__()
        self.wn = WeightNormalization(keras.layers.Dense(3))

    def call(self, x):
        return self.wn(x)


class CustomLayerWithoutBuild(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.wn = WeightNormalization(keras.layers.Dense(3))

    def call(self, x):
        return self.wn(x)


def _weight_normalized(model):
    (wn,) = [layer for layer in iter_layers(model) if isinstance(layer, WeightNormalization)]
    return wn


@pytest.mark.parametrize("first", ["fit", "eager call"])
@pytest.mark.parametrize(
    "make_model",
    [
        lambda: keras.Sequential([WeightNormalization(keras.layers.Dense(3))]),  # no Input
        SubclassedModel,
        lambda: keras.Sequential([CustomLayerWithoutBuild()]),
    ],
    ids=["sequential-without-input", "subclassed", "custom-layer-without-build"],
)
def test_lazily_built_models_start_with_g_equal_to_the_norm_of_v(make_model, first):
    """`g` is read from `v` at initialization, not captured from a traced build."""
    keras.utils.set_random_seed(8)
    model = make_model()
    model.compile(keras.optimizers.SGD(0.0), "mse")  # a zero step: weights stay as built
    x = np.random.default_rng(9).normal(size=(8, 4)).astype("float32")
    if first == "eager call":
        assert np.all(np.isfinite(numpy(model(x))))
    history = model.fit(x, np.ones((8, 3), "float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    wn = _weight_normalized(model)
    assert_allclose(wn.g, np.linalg.norm(numpy(wn.layer.kernel, "float64"), axis=0), rtol=1e-6)


def test_user_autocast_is_kept():
    assert WeightNormalization(keras.layers.Dense(3)).autocast is True
    assert WeightNormalization(keras.layers.Dense(3), autocast=False).autocast is False


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda: NormPropConv2D(4, 3),
        lambda: NormalizedConv2D(4, 3),
    ],
    ids=["NormPropConv2D", "NormalizedConv2D"],
)
def test_rejects_conv2d_subclasses_that_normalize(make_layer):
    """They are Conv2D subclasses, but their kernel variable is not the kernel they apply."""
    with pytest.raises(ValueError, match=r"already normalizes.*Received: layer=.* of type Norm"):
        WeightNormalization(make_layer())


def _direction(kernel, axes):
    return kernel / np.sqrt(np.sum(kernel**2, axis=axes, keepdims=True))


@pytest.mark.parametrize("make, shape, axes", [
    (lambda: keras.layers.Dense(4), (5, 3), (0,)),
    (lambda: keras.layers.Conv1D(4, 3, padding="same"), (2, 6, 3), (0, 1)),
])  # fmt: skip
def test_use_scale_false_is_the_direction_alone_as_flax(make, shape, axes, tmp_path):
    """flax's WeightNorm(use_scale=False): w = v / ||v||, no g, gradients through the norm."""
    x = np.random.default_rng(50).normal(size=shape).astype("float32")
    wn = WeightNormalization(make(), use_scale=False)
    y = numpy(wn(x))
    assert wn.g is None and wn.scales == {} and wn.data_init is False
    assert [v.name for v in wn.trainable_weights] == ["kernel", "bias"]
    plain = make()
    plain.build(shape)
    plain.set_weights([_direction(numpy(wn.layer.kernel), axes), numpy(wn.layer.bias)])
    assert_allclose(y, plain(x), rtol=1e-5, atol=1e-6)
    assert_allclose(wn.plain_layer()(x), y, rtol=1e-5, atol=1e-6)
    model = keras.Sequential([keras.Input(shape[1:]), wn])
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert reloaded.layers[0].use_scale is False and reloaded.layers[0].g is None
    assert_allclose(reloaded(x), y, rtol=1e-6, atol=1e-6)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    kernel = numpy(wn.layer.kernel)
    model.fit(x, np.ones_like(y), epochs=1, batch_size=len(x), verbose=0)
    assert not np.array_equal(numpy(wn.layer.kernel), kernel)


@pytest.mark.parametrize("log_scale, initializer, g", [
    (False, "ones", 1.0), (False, keras.initializers.Constant(2.5), 2.5), (True, "zeros", 1.0),
])  # fmt: skip
def test_scale_init_sets_the_initial_g(log_scale, initializer, g):
    """flax's scale_init: g starts where the initializer says (s = log g with log_scale)."""
    x = np.random.default_rng(51).normal(size=(5, 3)).astype("float32")
    wn = WeightNormalization(keras.layers.Dense(4), scale_init=initializer, log_scale=log_scale)
    y = numpy(wn(x))
    kernel = g * _direction(numpy(wn.layer.kernel), (0,))
    assert_allclose(y, x @ kernel + numpy(wn.layer.bias), rtol=1e-5, atol=1e-6)
    restored = WeightNormalization.from_config(wn.get_config())
    assert type(restored.scale_init) is type(keras.initializers.get(initializer))


@pytest.mark.parametrize("kwargs, message", [
    ({"use_scale": False, "log_scale": True}, "use_scale=False learns no g"),
    ({"use_scale": False, "scale_init": "ones"}, "use_scale=False learns no g"),
    ({"use_scale": False, "data_init": True}, "use_scale=False learns no g"),
    ({"scale_init": "no_such_initializer"}, "expects scale_init to be a Keras initializer"),
])  # fmt: skip
def test_use_scale_and_scale_init_refuse_what_they_cannot_take(kwargs, message):
    with pytest.raises(ValueError, match=rf"WeightNormalization .*{message}.*Received: "):
        WeightNormalization(keras.layers.Dense(4), **kwargs)
