"""NormalizedConv2D: fast path vs. im2col path vs. numpy (Kim et al. 2020, eq. 2)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_norms.layers import NormalizedConv2D
from tests.layer_test_helper import assert_allclose, numpy, run_layer_test

CASES = [
    dict(kernel_size=k, strides=s, padding=p, dilation_rate=d)
    for k in (1, 3, 5)
    for s, d in ((1, 1), (2, 1), (1, 2))
    for p in ("valid", "same")
    if not (p == "valid" and k == 5 and d == 2)
]


def _pair_of_layers(x, **kwargs):
    fast = NormalizedConv2D(4, implementation="fast", **kwargs)
    fast.build(x.shape)
    reference = NormalizedConv2D(4, implementation="im2col", **kwargs)
    reference.build(x.shape)
    reference.set_weights(fast.get_weights())
    return fast, reference


def _numpy_normalized_conv(x, kernel, bias, epsilon, padding):
    """Eq. 2 on explicit patches (stride 1): standardize each patch, then the product."""
    kh, kw = kernel.shape[:2]
    if padding == "same":  # zeros as unfold adds them (odd kernels: (k - 1) / 2 a side)
        x = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    patches = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # n h w c i j
    patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(*patches.shape[:3], -1)  # (i, j, c) order
    mean = patches.mean(axis=-1, keepdims=True)
    std = np.sqrt(patches.var(axis=-1, keepdims=True) + epsilon)
    return ((patches - mean) / std) @ kernel.reshape(-1, kernel.shape[-1]) + bias


@pytest.mark.parametrize("implementation", ["fast", "im2col"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_matches_numpy_reference(implementation, padding):
    rng = np.random.default_rng(0)
    x = 5.0 + rng.normal(size=(2, 7, 6, 3))
    layer = NormalizedConv2D(
        5, 3, padding=padding, implementation=implementation, bias_initializer="random_normal"
    )
    layer.build(x.shape)
    expected = _numpy_normalized_conv(
        x, layer.kernel.numpy(), layer.bias.numpy(), layer.epsilon, padding
    )
    assert_allclose(layer(x.astype("float32")), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs", CASES, ids=lambda k: "-".join(f"{v}" for v in k.values()))
@pytest.mark.parametrize("size", [8, 9])
@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_fast_path_equals_im2col_path(kwargs, size, offset):
    """Mean up to 100x the standard deviation: the cancellation case."""
    x = (offset + np.random.default_rng(size).normal(size=(2, size, size, 3))).astype("float32")
    fast, reference = _pair_of_layers(x, **kwargs)
    expected = numpy(reference(x))
    assert np.abs(numpy(fast(x)) - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.tensorflow_only
@pytest.mark.parametrize(
    "kwargs", [dict(kernel_size=3, padding="same"), dict(kernel_size=3, strides=2)]
)
def test_gradients_of_both_paths_agree(kwargs):
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32"))
    fast, reference = _pair_of_layers(x, **kwargs)
    grads = []
    for layer in (fast, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x)))
        grads.append(tape.gradient(loss, [x, layer.kernel, layer.bias]))
    for a, b in zip(*grads):
        assert_allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.tensorflow_only
def test_constant_patches_give_finite_outputs_and_gradients():
    x = tf.constant(np.full((2, 6, 6, 3), 7.0, "float32"))
    for implementation in ("fast", "im2col"):
        layer = NormalizedConv2D(4, 3, padding="same", implementation=implementation)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            total = tf.reduce_sum(y)
        grad = tape.gradient(total, x)
        assert np.all(np.isfinite(y.numpy())) and np.all(np.isfinite(grad.numpy()))
        # Interior patches are constant: standardized to 0, only the bias remains.
        assert_allclose(numpy(y)[:, 1:-1, 1:-1], 0.0, atol=1e-3)


def test_padded_zeros_count_in_border_patches():
    """'same' padding on ones: a corner patch holds 5 zeros and 4 ones, the centre a one."""
    layer = NormalizedConv2D(1, 3, padding="same", use_bias=False, epsilon=1e-9)
    layer.build((1, 4, 4, 1))
    center = np.zeros((3, 3, 1, 1), "float32")
    center[1, 1] = 1.0
    layer.kernel.assign(center)
    y = numpy(layer(np.ones((1, 4, 4, 1), "float32")))[0, :, :, 0]
    mean, std = 4 / 9, np.sqrt(4 / 9 - (4 / 9) ** 2)
    assert y[0, 0] == pytest.approx((1 - mean) / std, rel=1e-5)
    assert y[1, 1] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize(
    "make_layer, input_shape, output_shape, trainable",
    [
        (lambda: NormalizedConv2D(4, 3, padding="same"), (6, 6, 2), (6, 6, 4), 2),
        (lambda: NormalizedConv2D(3, 3, strides=2, use_scale=True), (7, 7, 2), (3, 3, 3), 3),
        (
            lambda: NormalizedConv2D(2, 2, implementation="im2col", use_bias=False),
            (5, 5, 3),
            (4, 4, 2),
            1,
        ),
    ],
)
def test_layer_test_helper(make_layer, input_shape, output_shape, trainable, tmp_path):
    run_layer_test(make_layer, input_shape, output_shape, trainable, 0, str(tmp_path))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        # Conv2D's own argument validation.
        (dict(filters=0, kernel_size=3), "Received filters=0"),
        (dict(filters=2, kernel_size=3, padding="causal"), "`padding` argument.*Received: causal"),
        (dict(filters=2, kernel_size=3, strides=2, dilation_rate=2), "`strides > 1` not supported"),
        (dict(filters=2, kernel_size=(3, -1)), r"Received kernel_size=\(3, -1\)"),
        (dict(filters=2, kernel_size=3, data_format="nhwc"), "Received: data_format=nhwc"),
        # NormalizedConv2D's.
        (dict(filters=2, kernel_size=3, implementation="cuda"), "Received: implementation='cuda'"),
        (dict(filters=2, kernel_size=3, epsilon=0.0), r"positive `epsilon`.*Received: epsilon=0.0"),
        (dict(filters=2, kernel_size=3, epsilon=float("inf")), r"Received: epsilon=inf"),
        (dict(filters=4, kernel_size=3, groups=2), r"groups=1 only.*Received: groups=2"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NormalizedConv2D(**kwargs)


def test_rejects_inputs_without_channels():
    with pytest.raises(
        ValueError, match="expected min_ndim=4, found ndim=3"
    ):  # Conv2D's input spec
        NormalizedConv2D(2, 3)(keras.Input((5, 3)))
    with pytest.raises(ValueError, match=r"rank-4.*Received: input_shape=\(None, 5, 3\)"):
        NormalizedConv2D(2, 3).build((None, 5, 3))


@pytest.mark.parametrize("implementation", ["fast", "im2col"])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, padding="same"),
        dict(kernel_size=(3, 2), strides=2, padding="same", use_scale=True),
        dict(kernel_size=3, dilation_rate=2),
    ],
)
def test_channels_first_equals_channels_last_on_transposed_data(kwargs, implementation):
    rng = np.random.default_rng(3)
    x = (4.0 + rng.normal(size=(2, 9, 8, 3))).astype("float32")
    last = NormalizedConv2D(
        5, implementation=implementation, bias_initializer="random_normal", **kwargs
    )
    last.build(x.shape)
    if last.use_scale:
        last.scale.assign(rng.uniform(0.5, 2.0, size=5))
    first = NormalizedConv2D(
        5, implementation=implementation, data_format="channels_first", **kwargs
    )
    first.build((None, 3, 9, 8))
    first.set_weights(last.get_weights())
    outputs = numpy(first(np.transpose(x, (0, 3, 1, 2))))
    assert_allclose(np.transpose(outputs, (0, 2, 3, 1)), last(x), rtol=1e-5, atol=1e-5)


def test_channels_first_matches_numpy_reference():
    rng = np.random.default_rng(4)
    x = 5.0 + rng.normal(size=(2, 7, 6, 3))
    layer = NormalizedConv2D(
        4, 3, padding="same", data_format="channels_first", bias_initializer="random_normal"
    )
    layer.build((None, 3, 7, 6))
    expected = _numpy_normalized_conv(
        x, layer.kernel.numpy(), layer.bias.numpy(), layer.epsilon, "same"
    )
    outputs = numpy(layer(np.transpose(x, (0, 3, 1, 2)).astype("float32")))
    assert_allclose(np.transpose(outputs, (0, 2, 3, 1)), expected, rtol=1e-4, atol=1e-4)


def test_is_a_conv2d_with_its_config():
    layer = NormalizedConv2D(4, 3, activation="relu", kernel_initializer="he_normal", name="nc")
    assert isinstance(layer, keras.layers.Conv2D)
    config = layer.get_config()
    assert config["activation"] == "relu" and config["data_format"] == "channels_last"
    assert (config["use_scale"], config["epsilon"], config["implementation"]) == (
        False,
        1e-5,
        "fast",
    )
    assert tuple(layer.compute_output_shape((None, 8, 8, 2))) == (None, 6, 6, 4)


def test_activation_follows_the_bias():
    x = np.random.default_rng(5).normal(size=(2, 6, 6, 3)).astype("float32")
    linear = NormalizedConv2D(4, 3, bias_initializer="random_normal")
    linear.build(x.shape)
    relu = NormalizedConv2D(4, 3, activation="relu")
    relu.build(x.shape)
    relu.set_weights(linear.get_weights())
    assert_allclose(relu(x), np.maximum(numpy(linear(x)), 0.0), rtol=1e-6, atol=1e-6)


def test_keras_file_keeps_scale_and_bias_apart(tmp_path):
    """Saved as kernel, scale, bias (the layer's historical order), loaded back in place."""
    rng = np.random.default_rng(6)
    model = keras.Sequential([keras.Input((6, 6, 2)), NormalizedConv2D(3, 3, use_scale=True)])
    layer = model.layers[0]
    layer.scale.assign(rng.uniform(0.5, 2.0, size=3))
    layer.bias.assign(rng.normal(size=3))
    path = str(tmp_path / "nc.keras")
    model.save(path)
    loaded = keras.saving.load_model(path).layers[0]
    assert_allclose(loaded.scale, layer.scale, rtol=0, atol=0)
    assert_allclose(loaded.bias, layer.bias, rtol=0, atol=0)


def test_user_autocast_is_kept():
    assert NormalizedConv2D(2, 3).autocast is True
    assert NormalizedConv2D(2, 3, autocast=False).autocast is False
