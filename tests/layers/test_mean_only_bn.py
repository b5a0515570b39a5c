"""MeanOnlyBatchNormalization against the numpy formulas of section 6A."""

import keras
import numpy as np
import pytest

from keras_norms.layers import MeanOnlyBatchNormalization
from tests.layer_test_helper import (
    assert_allclose,
    assert_array_equal,
    dtype_policy,
    numpy,
    run_layer_test,
)


def _numpy_mobn(x, axis, mean, beta):
    shape = [1] * x.ndim
    shape[axis] = -1
    return x - np.reshape(mean, shape) + np.reshape(beta, shape)


def _batch_mean(x, axis):
    return x.mean(axis=tuple(a for a in range(x.ndim) if a != axis % x.ndim))


@pytest.mark.parametrize("axis, shape", [(-1, (6, 5, 5, 3)), (1, (6, 3, 5, 5)), (-1, (10, 4))])
def test_training_and_inference_outputs_and_running_mean(axis, shape):
    rng = np.random.default_rng(0)
    x = (5.0 + 3.0 * rng.normal(size=shape)).astype("float32")
    channels = shape[axis]
    layer = MeanOnlyBatchNormalization(axis=axis, momentum=0.8)
    layer.build(x.shape)
    beta = rng.normal(size=channels)
    moving = rng.normal(size=channels)
    layer.beta.assign(beta)
    layer.moving_mean.assign(moving)
    x64 = x.astype("float64")
    batch_mean = _batch_mean(x64, axis)

    assert_allclose(
        layer(x, training=True), _numpy_mobn(x64, axis, batch_mean, beta), rtol=1e-5, atol=1e-5
    )
    # Section 6A: mu_new = decay * mu_old + (1 - decay) * mu_curr.
    updated = 0.8 * moving + 0.2 * batch_mean
    assert_allclose(layer.moving_mean.numpy(), updated, rtol=1e-5, atol=1e-6)
    assert_allclose(
        layer(x, training=False), _numpy_mobn(x64, axis, updated, beta), rtol=1e-5, atol=1e-5
    )
    assert_allclose(layer.moving_mean.numpy(), updated, rtol=1e-5, atol=1e-6)


def test_no_division_by_the_standard_deviation():
    x = np.array([[0.0], [100.0]], "float32")
    y = MeanOnlyBatchNormalization()(x, training=True)
    assert_allclose(y, [[-50.0], [50.0]])


def test_without_center_there_is_no_beta():
    layer = MeanOnlyBatchNormalization(center=False)
    x = np.array([[1.0, 2.0], [3.0, 6.0]], "float32")
    assert_allclose(layer(x, training=True), [[-1.0, -2.0], [1.0, 2.0]])
    assert [w.name for w in layer.weights] == ["moving_mean"]


def test_frozen_layer_uses_the_running_mean_in_training():
    layer = MeanOnlyBatchNormalization()
    x = np.array([[1.0], [3.0]], "float32")
    layer.build(x.shape)
    layer.trainable = False
    assert_allclose(layer(x, training=True), x)
    assert_array_equal(layer.moving_mean.numpy(), [0.0])


def test_mixed_precision_statistics_in_float32():
    # Large offset, small spread: float16 statistics would lose the spread.
    rng = np.random.default_rng(1)
    x = (1000.0 + rng.normal(size=(64, 4, 4, 2))).astype("float32")
    with dtype_policy("mixed_float16"):
        layer = MeanOnlyBatchNormalization()
        y = layer(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert layer.moving_mean.dtype == "float32"
    # The layer receives float16 inputs; a float16 sum of 1024 values of
    # about 1000 would overflow, a float32 one is exact to ~1e-7.
    expected_mean = _batch_mean(x.astype("float16").astype("float64"), -1)
    assert_allclose(layer.moving_mean.numpy(), 0.1 * expected_mean, rtol=1e-6)
    assert_allclose(np.mean(numpy(y, "float32"), axis=(0, 1, 2)), 0.0, atol=2e-3)


def test_layer_test_helper(tmp_path):
    run_layer_test(
        lambda: MeanOnlyBatchNormalization(momentum=0.5),
        input_shape=(3, 3, 2),
        expected_output_shape=(3, 3, 2),
        expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=1,
        tmp_dir=str(tmp_path),
        # A fresh layer at inference: moving mean 0, beta 0, so the identity.
        input_data=np.arange(36, dtype="float32").reshape(2, 3, 3, 2),
        expected_output=np.arange(36, dtype="float32").reshape(2, 3, 3, 2),
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(axis="channels"), r"`axis` to be an integer\. Received: axis='channels'"),
        (dict(axis=[1, 2]), r"Received: axis=\[1, 2\]"),
        (dict(momentum=1.5), r"`momentum` to be a number in \[0, 1\)\. Received: momentum=1.5"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MeanOnlyBatchNormalization(**kwargs)


def test_rejects_an_axis_the_input_does_not_have():
    with pytest.raises(ValueError, match=r"axis=3.*Received: input_shape=\(None, 4\)"):
        MeanOnlyBatchNormalization(axis=3)(keras.Input((4,)))


def test_rejects_an_unknown_feature_size():
    with pytest.raises(ValueError, match="known size on axis -1"):
        MeanOnlyBatchNormalization()(keras.Input((4, None)))


def test_synchronized_is_a_tensorflow_only_bool():
    with pytest.raises(
        TypeError, match=r"MeanOnlyBatchNormalization expects `synchronized` to be a bool"
    ):
        MeanOnlyBatchNormalization(synchronized="yes")
    if keras.backend.backend() == "tensorflow":
        assert MeanOnlyBatchNormalization(synchronized=True).get_config()["synchronized"] is True
    else:
        with pytest.raises(
            ValueError, match=r"synchronized=True is only supported with the TensorFlow"
        ):
            MeanOnlyBatchNormalization(synchronized=True)
