"""The plain ReLU network of the initialization experiment (notes section 1.2; He et al. 2015)."""

import inspect

import keras
import numpy as np
import pytest

from keras_norms.models import BUILDERS, plain_cnn
from keras_norms.models.networks.plain_cnn import strided_convolutions
from tests.layer_test_helper import numpy


def _weight_layers(model):
    return [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    ]


def _hand_count(depth, width, channels, classes, norm):
    """Parameters by hand: conv kernels 3x3, biases (none) or BN's 4 per channel (bn)."""
    per_channel = 1 if norm == "none" else 4
    convs = 9 * channels * width + 9 * width * width * (depth - 2)
    return convs + per_channel * width * (depth - 1) + width * classes + classes


@pytest.mark.parametrize("norm", ["none", "bn"])
@pytest.mark.parametrize("depth, width", [(22, 16), (30, 16), (2, 5), (5, 8)])
def test_parameter_count(depth, width, norm):
    model = plain_cnn((32, 32, 3), 10, norm, depth=depth, width=width)
    assert model.count_params() == _hand_count(depth, width, 3, 10, norm)


def test_default_parameter_counts():
    # 3*3*3*16+16 + 20*(3*3*16*16+16) + 16*10+10; bn: no conv bias, 4 per channel.
    assert plain_cnn().count_params() == 47_018
    assert plain_cnn(norm="bn").count_params() == 48_026


@pytest.mark.parametrize("depth", [2, 3, 4, 12, 22, 30])
def test_depth_counts_the_weight_layers(depth):
    model = plain_cnn((32, 32, 3), 10, depth=depth)
    layers = _weight_layers(model)
    assert len(layers) == depth
    convs, (dense,) = layers[:-1], layers[-1:]
    assert all(type(layer) is keras.layers.Conv2D for layer in convs)
    assert type(dense) is keras.layers.Dense and dense.name == "logits"
    for layer in convs:
        assert layer.kernel_size == (3, 3) and layer.padding == "same" and layer.filters == 16
        assert layer.activation is keras.activations.linear  # ReLU is its own layer
    # One ReLU per convolution, none after the logits.
    relus = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    assert len(relus) == depth - 1


def test_strides_split_the_convolutions_into_thirds():
    assert strided_convolutions(1) == []
    assert strided_convolutions(2) == [1]
    assert strided_convolutions(21) == [7, 14]  # the notes' 22-layer model
    assert strided_convolutions(29) == [9, 19]  # the 30-layer one
    model = plain_cnn((32, 32, 3), 10, depth=22)
    sides = [layer.output.shape[1] for layer in _weight_layers(model)[:-1]]
    assert sides == [32] * 7 + [16] * 7 + [8] * 7
    assert plain_cnn((7, 7, 1), 3, depth=4).output_shape == (None, 3)  # odd sides: ceil


def test_bn_variant_has_no_conv_bias_and_normalizes_before_relu():
    model = plain_cnn((16, 16, 1), 4, "bn", depth=5)
    for index in range(1, 5):
        assert not model.get_layer(f"conv{index}").use_bias
        bn = model.get_layer(f"conv{index}_bn")
        assert isinstance(bn, keras.layers.BatchNormalization)
        assert model.get_layer(f"conv{index}_relu").input is bn.output
    assert model.name == "plain_cnn5_bn" and plain_cnn().name == "plain_cnn22_none"


def test_registered_with_its_recipe():
    builder = BUILDERS["plain_cnn"]
    assert inspect.unwrap(builder.build) is plain_cnn and builder.norms == ("none", "bn")
    assert builder.default_norm == "none" and builder.min_input_size == 1
    recipe = builder.recipe
    assert (recipe.optimizer, recipe.learning_rate, recipe.schedule) == (
        "momentum",
        0.01,
        "constant",
    )


def test_kernel_initializer_reaches_every_kernel_and_biases_start_at_zero():
    model = plain_cnn(
        (8, 8, 2), 3, depth=6, width=4, kernel_initializer=keras.initializers.Constant(0.5)
    )
    layers = _weight_layers(model)
    assert len(layers) == 6
    for layer in layers:
        np.testing.assert_array_equal(numpy(layer.kernel), 0.5, err_msg=layer.name)
        np.testing.assert_array_equal(numpy(layer.bias), 0.0, err_msg=layer.name)


def test_default_is_he_normal():
    keras.utils.set_random_seed(3)
    model = plain_cnn((8, 8, 1), 3, depth=4, width=64)
    for layer in _weight_layers(model)[1:-1]:  # 3*3*64*64 entries each
        fan_in = 9 * 64
        np.testing.assert_allclose(numpy(layer.kernel).var(), 2 / fan_in, rtol=0.1)


def _same_padding_box(m, stride):
    """Mean of `m` over each 3x3 window of a "same" convolution, zeros outside.

    Keras' "same": `ceil(L / stride)` outputs and `max((out - 1) * stride + 3 - L, 0)`
    zeros, the odd one after.
    """
    for axis in (0, 1):
        size = m.shape[axis]
        out = -(-size // stride)
        pad = max((out - 1) * stride + 3 - size, 0)
        widths = [(0, 0), (0, 0)]
        widths[axis] = (pad // 2, pad - pad // 2)
        padded = np.pad(m, widths)
        taps = [np.take(padded, np.arange(out) * stride + offset, axis=axis) for offset in range(3)]
        m = sum(taps) / 3
    return m


def _predicted_log2_ratio(side, depth, gain):
    """log2 of E[conv_{depth-1}^2] / E[conv_1^2] at initialization, from eq. 1.44 and 1.36.

    Every convolution after the first multiplies the second moment of each
    position's pre-activation by `n Var[W] / 2` (`gain`: 1 for Kaiming's
    eq. 1.46, 1/2 for Xavier's eq. 1.45 at fan-in = fan-out) times the mean
    of its input's second moments over the 3x3 window, zero-padded
    positions counting 0; the first convolution sees N(0, 1) inputs, the
    same at every position. Without padding this is `log2(gain) * (depth - 2)`.
    """
    strided = strided_convolutions(depth - 1)
    moments = _same_padding_box(np.ones((side, side)), 2 if 0 in strided else 1)
    first = moments.mean()
    for index in range(1, depth - 1):
        moments = gain * _same_padding_box(moments, 2 if index in strided else 1)
    return float(np.log2(moments.mean() / first))


def test_padding_aware_prediction_reduces_to_the_notes_without_padding():
    # The padded border's share, and so its loss, falls as 1 / side: at 512
    # (maps of 512, 256 and 128) 0.044 remains of gain^(depth - 2).
    assert _predicted_log2_ratio(512, 12, 1.0) == pytest.approx(0.0, abs=0.05)
    assert _predicted_log2_ratio(512, 12, 0.5) == pytest.approx(-10.0, abs=0.05)


# The variance experiment: depth 12 (11 convolutions: maps of 32, 16 and 8),
# width 64, N(0, 1) inputs. The notes' eq. 1.36 is an expectation over the
# weights; one network's log2 ratio scatters by about 1 around it at this width
# (the ReLU outputs' common mean goes through each layer's few channel sums),
# so the second moments are summed over MODELS networks first: that
# statistic's log2 measured 0.24 standard deviation over 12 repetitions
# (within [-1.26, -0.46] for Kaiming's, prediction -0.81), hence a tolerance of 1.
DEPTH, WIDTH, SIDE, EXAMPLES, MODELS = 12, 64, 32, 8, 8
LOG2_TOLERANCE = 1.0


def _log2_second_moment_ratio(kernel_initializer, seed):
    first = last = 0.0
    rng = np.random.default_rng(seed)
    for model_index in range(MODELS):
        keras.utils.set_random_seed(seed + model_index)
        model = plain_cnn(
            (SIDE, SIDE, 3), 10, depth=DEPTH, width=WIDTH, kernel_initializer=kernel_initializer
        )
        probe = keras.Model(
            model.input,
            [model.get_layer("conv1").output, model.get_layer(f"conv{DEPTH - 1}").output],
        )
        x = rng.normal(size=(EXAMPLES, SIDE, SIDE, 3)).astype("float32")
        conv_first, conv_last = (numpy(y, "float64") for y in probe(x))
        first += np.mean(conv_first**2)
        last += np.mean(conv_last**2)
    return float(np.log2(last / first))


def test_kaiming_keeps_the_pre_activation_variance_and_xavier_halves_it_per_layer():
    kaiming = _log2_second_moment_ratio("he_normal", seed=0)
    xavier = _log2_second_moment_ratio("glorot_normal", seed=100)
    kaiming_predicted = _predicted_log2_ratio(SIDE, DEPTH, 1.0)
    xavier_predicted = _predicted_log2_ratio(SIDE, DEPTH, 0.5)
    # Zero padding alone loses 0.81 (a factor 1.75) over these 10 layers;
    # Xavier's loses 1/2 per layer on top of it: -(DEPTH - 2) exactly.
    assert kaiming_predicted == pytest.approx(-0.81, abs=0.01)
    assert xavier_predicted == pytest.approx(kaiming_predicted - (DEPTH - 2), abs=1e-9)
    assert kaiming == pytest.approx(kaiming_predicted, abs=LOG2_TOLERANCE)
    assert xavier == pytest.approx(xavier_predicted, abs=LOG2_TOLERANCE)
    assert kaiming > -2  # no vanishing: within a factor of 4 ...
    assert xavier < -(DEPTH - 2) + 1  # ... where Xavier's loses 2^-(DEPTH - 2) and more


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(norm="gn"), r"norm in \('none', 'bn'\)\. Received: norm='gn'"),
        (dict(depth=1), r"^plain_cnn expects an integer depth >= 2 .*Received: depth=1$"),
        (dict(depth=0), "Received: depth=0$"),
        (dict(depth=12.0), "Received: depth=12.0$"),
        (dict(depth=True), "Received: depth=True$"),
        (dict(depth="22"), "Received: depth='22'$"),
        (dict(width=0), r"^plain_cnn expects a positive integer width\. Received: width=0$"),
        (dict(width=-16), "Received: width=-16$"),
        (dict(width=16.5), "Received: width=16.5$"),
        (dict(width=None), "Received: width=None$"),
        (dict(kernel_initializer="kaiming"), "Received: kernel_initializer='kaiming'$"),
        (dict(input_shape=(32, 32)), r"input_shape=\(height, width, channels\)"),
        (dict(num_classes=0), "Received: num_classes=0$"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plain_cnn(**kwargs)


def test_takes_numpy_integers_for_depth_and_width():
    model = plain_cnn((8, 8, 1), 3, depth=np.int64(4), width=np.int32(2))
    assert len(_weight_layers(model)) == 4 and model.get_layer("conv1").filters == 2
