"""NormalizedConv2D: fast path vs. im2col path vs. numpy (Kim et al. 2020, eq. 2)."""

import itertools
import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_norms import fold
from keras_norms.layers import NormalizedConv2D
from keras_norms.layers.normalized_conv import IMPLEMENTATIONS
from tests.layer_test_helper import assert_allclose, numpy, run_layer_test

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
EXPLICIT_PADDINGS = (1, 2, ((1, 0), (0, 2)), ((2, 1), (0, 1)))
PADDING_MESSAGE = (
    r"NormalizedConv2D expects padding 'valid', 'same', a non-negative int or "
    r"\(\(top, bottom\), \(left, right\)\)\. Received: padding="
)

CASES = [
    dict(kernel_size=k, strides=s, padding=p, dilation_rate=d)
    for k in (1, 3, 5)
    for s, d in ((1, 1), (2, 1), (1, 2), (2, 2))
    for p in ("valid", "same", 1)
    # Neither an empty output nor patches of padding zeros only (noise: see the reference test).
    if not (p == "valid" and k == 5 and d == 2) and not (p == 1 and k == 1)
]

# The authors' forward pass: every padding form, strides with dilation; 72 configurations.
REFERENCE_CASES = [
    dict(kernel_size=k, strides=s, dilation_rate=d, padding=p)
    for k in (1, 2, 3)
    for s, d in ((1, 1), (2, 1), (1, 2), (2, 2))
    for p in ("valid", "same") + EXPLICIT_PADDINGS
]


def _case_id(kwargs):
    return "-".join(str(value).replace(" ", "") for value in kwargs.values())


def _skip_strides_with_dilation_on_tensorflow(kwargs):
    strides, dilation = (np.max(kwargs.get(key, 1)) for key in ("strides", "dilation_rate"))
    if ON_TENSORFLOW and strides > 1 and dilation > 1:
        pytest.skip("TensorFlow's convolution refuses strides and dilation both above 1")


def _pair_of_layers(x, **kwargs):
    fast = NormalizedConv2D(4, implementation="fast", **kwargs)
    fast.build(x.shape)
    reference = NormalizedConv2D(4, implementation="im2col", **kwargs)
    reference.build(x.shape)
    reference.set_weights(fast.get_weights())
    return fast, reference


def _tensorflow_same_pads(size, extent, stride):
    """TensorFlow's documented "same": `ceil(size / stride)` outputs, the odd zero after."""
    total = max((-(-size // stride) - 1) * stride + extent - size, 0)
    return (total // 2, total - total // 2)


def _numpy_pads(padding, spatial_shape, extents, strides):
    """Any `padding` of the layer as `((top, bottom), (left, right))`."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        return tuple(map(_tensorflow_same_pads, spatial_shape, extents, strides))
    if isinstance(padding, int):
        return ((padding, padding),) * 2
    return padding


def _reference_forward(x, kernel, bias, epsilon, padding, strides=(1, 1), dilation=(1, 1)):
    """The authors' reference forward pass (section 2.4, their NCNN.py) in numpy, channels last.

    `unfold`: zero padding, then every patch at the strides and dilation,
    flattened in (channel, row, column) order; standardized by its mean and
    biased variance with `epsilon` inside the square root; times the
    `(filters, C, kh, kw)` weight flattened alike; plus the bias.
    """
    kh, kw, _, filters = kernel.shape
    extents = ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1)
    pads = _numpy_pads(padding, x.shape[1:3], extents, strides)
    x = np.pad(x, ((0, 0), *pads, (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(x, extents, axis=(1, 2))  # n h w c i j
    windows = windows[:, :: strides[0], :: strides[1], :, :: dilation[0], :: dilation[1]]
    patches = windows.reshape(*windows.shape[:3], -1)
    weight = np.transpose(kernel, (3, 2, 0, 1)).reshape(filters, -1)
    mean = patches.mean(axis=-1, keepdims=True)
    std = np.sqrt(patches.var(axis=-1, keepdims=True) + epsilon)
    return ((patches - mean) / std) @ weight.T + bias


def _layer_reference(layer, x):
    """`_reference_forward` with `layer`'s weights and arguments (channels last)."""
    bias = numpy(layer.bias) if layer.use_bias else 0.0
    return _reference_forward(
        x,
        numpy(layer.kernel),
        bias,
        layer.epsilon,
        layer.padding,
        layer.strides,
        layer.dilation_rate,
    )


def test_numpy_reference_is_the_authors_unfold_forward_pass():
    """The numpy port against the reference code's own torch calls, in float64."""
    torch = pytest.importorskip("torch")
    unfold = torch.nn.functional.unfold
    rng = np.random.default_rng(7)
    for size, padding, stride, dilation in ((3, 1, 2, 1), (2, 2, 1, 2), (3, 0, 2, 2), (1, 1, 3, 1)):
        x = rng.normal(size=(2, 9, 8, 3))
        kernel, bias = rng.normal(size=(size, size, 3, 4)), rng.normal(size=4)
        columns = unfold(
            torch.from_numpy(np.moveaxis(x, -1, 1)),
            size,
            dilation=dilation,
            padding=padding,
            stride=stride,
        ).transpose(1, 2)
        mean = columns.mean(-1, keepdim=True)
        std = torch.sqrt(columns.var(-1, unbiased=False, keepdim=True) + 1e-14)
        weight = torch.from_numpy(np.transpose(kernel, (3, 2, 0, 1)).reshape(4, -1))
        expected = ((columns - mean) / std @ weight.t() + torch.from_numpy(bias)).numpy()
        actual = _reference_forward(x, kernel, bias, 1e-14, padding, (stride,) * 2, (dilation,) * 2)
        np.testing.assert_allclose(actual.reshape(expected.shape), expected, rtol=1e-12, atol=1e-12)


def _only_padding_patches(layer, spatial_shape):
    """Whether some patch holds padding zeros only: a constant patch, rounding noise here."""
    extents = [(k - 1) * d + 1 for k, d in zip(layer.kernel_size, layer.dilation_rate)]
    pads = _numpy_pads(layer.padding, spatial_shape, extents, layer.strides)
    return any(max(pair) >= extent for pair, extent in zip(pads, extents))


@pytest.mark.parametrize("kwargs", REFERENCE_CASES, ids=_case_id)
def test_both_paths_match_the_authors_forward_pass(kwargs):
    """Both implementations, the default epsilon and the reference's 1e-14, odd and even sizes.

    Relative to the largest output: 1e-4 (float32 sums); 1e-3 at the default
    epsilon where patches of padding zeros only exist (constant after the
    mean shift: rounding noise over sqrt(epsilon) where the reference has 0);
    at 1e-14 those are noise of order 10 (see the `epsilon` argument) and
    not compared.
    """
    _skip_strides_with_dilation_on_tensorflow(kwargs)
    rng = np.random.default_rng(8)
    for shape, implementation, epsilon in itertools.product(
        ((8, 9), (9, 8)), IMPLEMENTATIONS, (1e-5, 1e-14)
    ):
        x = 5.0 + rng.normal(size=(2, *shape, 3))
        layer = NormalizedConv2D(
            4,
            implementation=implementation,
            epsilon=epsilon,
            bias_initializer="random_normal",
            **kwargs,
        )
        layer.build(x.shape)
        tolerance = 1e-4
        if _only_padding_patches(layer, shape):
            if epsilon < 1e-5:
                continue
            tolerance = 1e-3
        expected = _layer_reference(layer, x)
        difference = np.abs(numpy(layer(x.astype("float32"))) - expected).max()
        assert difference <= tolerance * np.abs(expected).max(), (shape, implementation, epsilon)


def test_integer_padding_computes_the_reference_where_same_does_not():
    """Stride 2, even size: TensorFlow's "same" pads (0, 1), the reference code (1, 1)."""
    x = 5.0 + np.random.default_rng(9).normal(size=(2, 8, 8, 3))
    symmetric = NormalizedConv2D(4, 3, strides=2, padding=1)
    symmetric.build(x.shape)
    same = NormalizedConv2D(4, 3, strides=2, padding="same")
    same.build(x.shape)
    same.set_weights(symmetric.get_weights())
    expected = _reference_forward(x, numpy(symmetric.kernel), 0.0, 1e-5, 1, (2, 2))
    assert_allclose(symmetric(x.astype("float32")), expected, rtol=1e-4, atol=1e-4)
    assert np.abs(numpy(same(x.astype("float32"))) - expected).max() > 1.0


@pytest.mark.parametrize("kwargs", CASES, ids=_case_id)
@pytest.mark.parametrize("size", [8, 9])
@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_fast_path_equals_im2col_path(kwargs, size, offset):
    """Mean up to 100x the standard deviation: the cancellation case."""
    _skip_strides_with_dilation_on_tensorflow(kwargs)
    x = (offset + np.random.default_rng(size).normal(size=(2, size, size, 3))).astype("float32")
    fast, reference = _pair_of_layers(x, **kwargs)
    expected = numpy(reference(x))
    assert np.abs(numpy(fast(x)) - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.tensorflow_only
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, padding="same"),
        dict(kernel_size=3, strides=2),
        dict(kernel_size=3, strides=2, padding=((2, 1), (0, 1))),
    ],
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
        (lambda: NormalizedConv2D(3, 3, strides=2, padding=1), (8, 8, 2), (4, 4, 3), 2),
        (
            lambda: NormalizedConv2D(2, (3, 2), padding=((1, 0), (0, 2)), use_scale=True),
            (5, 5, 3),
            (4, 6, 2),
            3,
        ),
    ],
)
def test_layer_test_helper(make_layer, input_shape, output_shape, trainable, tmp_path):
    run_layer_test(make_layer, input_shape, output_shape, trainable, 0, str(tmp_path))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        # Conv2D's arguments, checked before Conv2D's own messages (which name no layer).
        (
            dict(filters=2, kernel_size=3, data_format="NCHW"),
            r"NormalizedConv2D expects `data_format` to be None or one of 'channels_last', "
            r"'channels_first'\. Received: data_format='NCHW'$",
        ),
        (
            dict(filters=2, kernel_size=3, data_format=1),
            "NormalizedConv2D.*Received: data_format=1$",
        ),
        (dict(filters=4, kernel_size=3, groups=True), r"groups=1 only.*Received: groups=True$"),
        # NormalizedConv2D's (keras_norms.layers.arguments; tests/layers/test_properties.py).
        (dict(filters=0, kernel_size=3), "NormalizedConv2D.*Received: filters=0"),
        (
            dict(filters=2, kernel_size=(3, -1)),
            r"NormalizedConv2D.*Received: kernel_size=\(3, -1\)",
        ),
        (dict(filters=2, kernel_size=3, implementation="cuda"), "Received: implementation='cuda'"),
        (
            dict(filters=2, kernel_size=3, epsilon=0.0),
            r"`epsilon` to be a positive, finite number. Received: epsilon=0.0",
        ),
        (dict(filters=2, kernel_size=3, epsilon=float("inf")), r"Received: epsilon=inf"),
        (dict(filters=4, kernel_size=3, groups=2), r"groups=1 only.*Received: groups=2"),
    ]
    + [
        (
            dict(filters=2, kernel_size=3, padding=padding),
            PADDING_MESSAGE + re.escape(repr(padding)),
        )
        for padding in (
            -1,
            1.5,
            True,
            (1, 2),
            ((1, 1),),
            ((1, 1), (1, -1)),
            [[1, 1], [1, None]],
            None,
            "causal",
            "full",
        )
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NormalizedConv2D(**kwargs)


@pytest.mark.parametrize("padding, data_format", [("SAME", "Channels_First"), ("Valid", None)])
def test_padding_and_data_format_are_read_in_any_case_as_conv2d_reads_them(padding, data_format):
    layer = NormalizedConv2D(2, 3, padding=padding, data_format=data_format)
    assert layer.padding == padding.lower()
    assert layer.data_format == keras.layers.Conv2D(2, 3, data_format=data_format).data_format


def test_rejects_inputs_without_channels():
    with pytest.raises(ValueError, match=r"NormalizedConv2D.*rank-4.*Received: input_shape"):
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


@pytest.mark.parametrize("kwargs", [dict(), dict(strides=(2, 1), padding=((2, 1), (0, 1)))])
def test_channels_first_matches_numpy_reference(kwargs):
    rng = np.random.default_rng(4)
    x = 5.0 + rng.normal(size=(2, 7, 6, 3))
    layer = NormalizedConv2D(
        4,
        3,
        **{"padding": "same", **kwargs},
        data_format="channels_first",
        bias_initializer="random_normal",
    )
    layer.build((None, 3, 7, 6))
    expected = _layer_reference(layer, x)
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


# Kernel 3 at strides 1 and 2, kernels 1 and 2 at stride 2 and kernel 2 at stride 3 (extent
# below the stride), the im2col path, channels first: on sizes 7, 8, 9 (every (L - 1) % s).
DYNAMIC_LAYERS = [
    dict(kernel_size=3),
    dict(kernel_size=3, strides=2),
    dict(kernel_size=1, strides=2),
    dict(kernel_size=2, strides=2),
    dict(kernel_size=2, strides=3),
    dict(kernel_size=3, strides=2, implementation="im2col"),
    dict(kernel_size=3, strides=2, data_format="channels_first"),
    dict(kernel_size=3, strides=2, padding=((2, 1), (0, 1))),
]
DYNAMIC_SHAPES = ((7, 8), (8, 9), (9, 7))


def _model_of_unknown_spatial_size():
    """`Input((None, None, 3))` into every `DYNAMIC_LAYERS` layer ("same" unless given)."""
    keras.utils.set_random_seed(10)
    inputs = keras.Input((None, None, 3))
    outputs = []
    for kwargs in DYNAMIC_LAYERS:
        layer = NormalizedConv2D(4, **{"padding": "same", **kwargs})
        if layer.data_format == "channels_first":
            transposed = keras.layers.Permute((3, 1, 2))(inputs)
            outputs.append(keras.layers.Permute((2, 3, 1))(layer(transposed)))
        else:
            outputs.append(layer(inputs))
    return keras.Model(inputs, outputs)


def _traced(model):
    """`model` traced once for any batch and spatial size, where the backend traces.

    TensorFlow: one `tf.function` with `None` sizes; JAX: `jax.jit` of
    `stateless_call`, exported with symbolic sizes; PyTorch (eager): the model.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 3))])
    if backend == "jax":
        import jax
        from jax import export

        variables = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        jitted = jax.jit(lambda x: model.stateless_call(variables, non_trainable, x)[0])
        shape = export.symbolic_shape("n, h, w") + (3,)
        return export.export(jitted)(jax.ShapeDtypeStruct(shape, "float32")).call
    return model


def test_unknown_spatial_sizes_work_traced():
    model = _model_of_unknown_spatial_size()
    traced = _traced(model)
    rng = np.random.default_rng(11)
    for shape in DYNAMIC_SHAPES:
        x = (5.0 + rng.normal(size=(2, *shape, 3))).astype("float32")
        for actual, expected in zip(traced(x), model(x)):
            assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.tensorflow_only
def test_unknown_spatial_sizes_survive_saved_model_export(tmp_path):
    model = _model_of_unknown_spatial_size()
    path = str(tmp_path / "saved_model")
    model.export(path, format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(path)  # kept: `serve` reads its variables
    rng = np.random.default_rng(12)
    for shape in DYNAMIC_SHAPES:
        x = (5.0 + rng.normal(size=(2, *shape, 3))).astype("float32")
        for actual, expected in zip(loaded.serve(x), model(x)):
            assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.tensorflow_only
def test_strides_with_dilation_is_a_clear_error_on_tensorflow():
    with pytest.raises(
        ValueError,
        match=r"NormalizedConv2D supports strides > 1 with dilation_rate > 1 on the JAX and "
        r"PyTorch backends only .*Received: strides=\(2, 1\), dilation_rate=\(1, 2\)",
    ):
        NormalizedConv2D(2, 3, strides=(2, 1), dilation_rate=(1, 2))


@pytest.mark.parametrize("padding", [2, ((1, 0), (0, 2)), [[1, 0], [0, 2]]])
def test_explicit_padding_survives_json_config_and_fold(padding):
    expected_padding = padding if isinstance(padding, int) else ((1, 0), (0, 2))
    layer = NormalizedConv2D(3, 3, padding=padding, name="nc")
    config = json.loads(json.dumps(layer.get_config()))
    assert layer.padding == NormalizedConv2D.from_config(config).padding == expected_padding
    model = keras.Sequential([keras.Input((6, 5, 2)), layer])
    x = np.random.default_rng(13).normal(size=(2, 6, 5, 2)).astype("float32")
    folded = fold(model)
    assert folded.get_layer("nc").padding == expected_padding
    assert_allclose(folded(x), model(x), rtol=1e-6, atol=1e-6)


def test_rejects_a_padded_input_smaller_than_the_kernel():
    with pytest.raises(
        ValueError,
        match=r"NormalizedConv2D expects a padded input at least as large as the dilated kernel "
        r"\(5, 5\)\. Received: input_shape=\(None, 2, 3, 1\), padding=1",
    ):
        NormalizedConv2D(2, 5, padding=1).build((None, 2, 3, 1))
