"""BatchStatisticsNormalization: what its three subclasses share, against numpy."""

import keras
import numpy as np
import pytest

from keras_norms.layers import (
    BatchStatisticsNormalization,
    DWCKNormalization,
    LearnedStatisticsNormalization,
    MeanOnlyBatchNormalization,
)
from tests.layer_test_helper import assert_allclose, assert_array_equal, dtype_policy, numpy

SUBCLASSES = [MeanOnlyBatchNormalization, DWCKNormalization, LearnedStatisticsNormalization]
WITH_VARIANCE = [DWCKNormalization, LearnedStatisticsNormalization]


def _randomize(layer, rng):
    """Random trainable weights and running statistics (kernels non-negative for DWCK)."""
    for weight in layer.trainable_weights:
        weight.assign(rng.uniform(0.2, 1.0, size=weight.shape))
    layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
    if layer.moving_variance is not None:
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=layer.moving_variance.shape))


@pytest.mark.parametrize("cls", SUBCLASSES)
def test_is_a_batch_statistics_normalization(cls):
    assert issubclass(cls, BatchStatisticsNormalization)


@pytest.mark.parametrize("cls", SUBCLASSES)
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(axis="channels"), ValueError, "`axis` to be an integer. Received: axis='channels'"),
        (dict(axis=True), ValueError, "Received: axis=True"),
        (
            dict(momentum=1.5),
            ValueError,
            r"`momentum` to be a number in \[0, 1\). Received: momentum=1.5",
        ),
        (dict(momentum=-0.1), ValueError, "Received: momentum=-0.1"),
        (dict(momentum=1.0), ValueError, "Received: momentum=1.0"),
        (dict(momentum="high"), TypeError, "Received: momentum='high' of type str"),
        (
            dict(synchronized="yes"),
            TypeError,
            "`synchronized` to be a bool. Received: synchronized='yes' of type str",
        ),
    ],
)
def test_argument_errors_name_the_subclass(cls, kwargs, error, message):
    with pytest.raises(error, match=f"^{cls.__name__}.*{message}$"):
        cls(**kwargs)


@pytest.mark.parametrize("cls", WITH_VARIANCE)
@pytest.mark.parametrize("epsilon", [0.0, -1e-3, float("inf"), float("nan"), "small"])
def test_epsilon_must_be_positive_and_finite(cls, epsilon):
    with pytest.raises(
        (ValueError, TypeError),
        match=f"^{cls.__name__} expects `epsilon` to be a positive, finite number. Received: ",
    ):
        cls(epsilon=epsilon)


def test_mean_only_takes_no_epsilon():
    with pytest.raises(TypeError, match="takes no `epsilon`.*Received: epsilon=0.001$"):
        MeanOnlyBatchNormalization(epsilon=1e-3)


@pytest.mark.parametrize("cls", WITH_VARIANCE)
@pytest.mark.parametrize("axis", [2, -2, 0])
def test_image_layers_take_channels_last_or_first(cls, axis):
    with pytest.raises(
        ValueError, match=rf"^{cls.__name__} expects `axis` -1.*Received: axis={axis}$"
    ):
        cls(axis=axis)


@pytest.mark.parametrize("cls", SUBCLASSES)
def test_synchronized_is_tensorflow_only(cls):
    if keras.backend.backend() == "tensorflow":
        assert cls(synchronized=True).get_config()["synchronized"] is True
    else:
        with pytest.raises(
            ValueError, match=f"^{cls.__name__}: synchronized=True is only supported"
        ):
            cls(synchronized=True)


@pytest.mark.parametrize("cls", SUBCLASSES)
def test_moving_statistics_are_float32_non_trainable_mean_aggregated(cls):
    with dtype_policy("mixed_float16"):
        layer = cls()
        layer.build((None, 4, 4, 3))
    statistics = [layer.moving_mean] + ([layer.moving_variance] if cls in WITH_VARIANCE else [])
    assert [v.name for v in layer.non_trainable_weights] == [v.name for v in statistics]
    for variable in statistics:
        assert variable.dtype == "float32" and not variable.trainable
        assert variable.aggregation == "mean" and variable.shape == (3,)
    assert (layer.moving_variance is None) == (cls is MeanOnlyBatchNormalization)


@pytest.mark.parametrize("cls", SUBCLASSES)
def test_user_autocast_is_kept(cls):
    assert cls().autocast is True
    assert cls(autocast=False).autocast is False


@pytest.mark.parametrize("cls", SUBCLASSES)
@pytest.mark.parametrize("axis", [-1, 1])
def test_inference_affine_is_the_inference_output(cls, axis):
    """`y = x * scale + shift` per channel, with numpy's scale and shift of the formula."""
    rng = np.random.default_rng(0)
    shape = (3, 8, 8, 4) if axis == -1 else (3, 4, 8, 8)
    x = rng.normal(size=shape).astype("float32")
    layer = cls(axis=axis)
    layer.build(shape)
    _randomize(layer, rng)
    scale, shift = layer.inference_affine()
    assert scale.dtype == shift.dtype == np.float64 and scale.shape == shift.shape == (4,)
    mean = layer.moving_mean.numpy().astype("float64")
    beta = numpy(layer.beta, "float64") if layer.beta is not None else np.zeros(4)
    if cls is MeanOnlyBatchNormalization:
        expected_scale = np.ones(4)
    else:
        expected_scale = 1 / np.sqrt(
            layer.moving_variance.numpy().astype("float64") + layer.epsilon
        )
        if layer.gamma is not None:
            expected_scale = expected_scale * numpy(layer.gamma, "float64")
    assert_allclose(scale, expected_scale, rtol=1e-12)
    assert_allclose(shift, beta - mean * expected_scale, rtol=1e-12, atol=1e-12)
    per_channel = (1, -1, 1, 1) if axis == 1 else (1, 1, 1, -1)
    expected = x * scale.reshape(per_channel) + shift.reshape(per_channel)
    assert_allclose(layer(x, training=False), expected, rtol=1e-5, atol=1e-5)


def test_inference_affine_needs_a_built_layer():
    with pytest.raises(
        ValueError, match=r"inference_affine needs a built layer\. Received: built=False"
    ):
        DWCKNormalization().inference_affine()


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (DWCKNormalization, dict()),
        (DWCKNormalization, dict(weighted_variance=True)),
        (LearnedStatisticsNormalization, dict()),
    ],
)
def test_channels_first_equals_channels_last_on_transposed_data(cls, kwargs):
    rng = np.random.default_rng(1)
    x = (2.0 + 3.0 * rng.normal(size=(4, 7, 6, 5))).astype("float32")
    last = cls(momentum=0.7, **kwargs)
    last.build(x.shape)
    _randomize(last, rng)
    first = cls(axis=1, momentum=0.7, **kwargs)
    first.build((None, 5, 7, 6))
    first.set_weights(last.get_weights())
    x_first = np.transpose(x, (0, 3, 1, 2))
    to_last = lambda y: np.transpose(numpy(y), (0, 2, 3, 1))  # noqa: E731
    assert_allclose(
        to_last(first(x_first, training=True)), last(x, training=True), rtol=1e-5, atol=1e-5
    )
    assert_allclose(first.moving_mean, last.moving_mean, rtol=1e-5, atol=1e-6)
    assert_allclose(first.moving_variance, last.moving_variance, rtol=1e-5)
    assert_allclose(
        to_last(first(x_first, training=False)), last(x, training=False), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("cls", SUBCLASSES)
def test_mixed_precision_statistics_equal_float32_statistics(cls):
    """Under mixed_float16 the statistics of the (float16) inputs are computed in float32.

    Zero-mean inputs: a statistic computed from float16-rounded weights or
    signals (DWCK's kernels, the learned-statistics networks' inputs) would
    be off by ~1e-3 relative.
    """
    rng = np.random.default_rng(2)
    x16 = rng.normal(size=(8, 8, 8, 6)).astype("float16")
    reference = cls(momentum=0.0)
    reference.build(x16.shape)
    _randomize(reference, rng)
    with dtype_policy("mixed_float16"):
        layer = cls(momentum=0.0)
        layer.build(x16.shape)
    layer.set_weights(reference.get_weights())
    y = layer(x16, training=True)
    reference(x16.astype("float32"), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert_allclose(layer.moving_mean, reference.moving_mean, rtol=1e-5, atol=1e-7)
    if reference.moving_variance is not None:
        assert_allclose(layer.moving_variance, reference.moving_variance, rtol=1e-5)


def _compiled(function, example_shape):
    """`function` of a float32 batch, compiled as training steps run on this backend.

    TensorFlow: traced once with an unknown batch size, so the batch size is
    a tensor. JAX: jitted. Torch: eager, as Keras' torch trainer runs.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        signature = [tf.TensorSpec((None,) + example_shape, "float32")]
        return tf.function(function, input_signature=signature)
    if backend == "jax":
        import jax

        return jax.jit(function)
    return function


@pytest.mark.parametrize("cls", SUBCLASSES)
def test_empty_batch_keeps_running_averages_exactly(cls):
    """N = 0 in training: the empty output, the running averages untouched (Keras BN's turn NaN).

    Eager, and in a compiled stateless call that also takes a full batch,
    whose update must match the eager one.
    """
    rng = np.random.default_rng(4)
    layer = cls(momentum=0.5)
    layer.build((None, 4, 4, 3))
    _randomize(layer, rng)
    trainable = [v.value for v in layer.trainable_variables]
    statistics = [v.value for v in layer.non_trainable_variables]
    before = [numpy(v).copy() for v in statistics]

    def step(x):
        return layer.stateless_call(trainable, statistics, x, training=True)

    compiled = _compiled(step, (4, 4, 3))
    full = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    for got, want in zip(compiled(full)[1], step(full)[1]):
        assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    empty = np.zeros((0, 4, 4, 3), "float32")
    outputs, updated = compiled(empty)
    assert tuple(outputs.shape) == (0, 4, 4, 3)
    for got, want in zip(updated, before):
        assert_array_equal(got, want)
    outputs = layer(empty, training=True)
    assert tuple(outputs.shape) == (0, 4, 4, 3)
    for variable, want in zip(layer.non_trainable_variables, before):
        assert_array_equal(variable, want)


@pytest.mark.parametrize("cls", SUBCLASSES)
def test_training_step_on_an_empty_batch_changes_no_weight(cls):
    """`train_on_batch` (compiled on TensorFlow and JAX) on N = 0 after a full batch.

    Running averages and trainable weights stay exactly as they were:
    batch statistics of nothing are 0, not NaN, so every gradient is 0
    (Keras BN's running averages, scale and offset turn NaN).
    """
    rng = np.random.default_rng(5)
    model = keras.Sequential([keras.Input((4, 4, 3)), cls(momentum=0.5)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    model.train_on_batch(x, x)
    before = [numpy(w).copy() for w in model.weights]
    empty = np.zeros((0, 4, 4, 3), "float32")
    model.train_on_batch(empty, empty)
    for weight, want in zip(model.weights, before):
        assert_array_equal(weight, want)
