"""The NIN builder (NormProp paper, section 5 protocol)."""

import keras
import numpy as np
import pytest

from keras_norms.layers import NormPropConv2D
from keras_norms.models import BUILDERS, nin
from keras_norms.models.networks.nin import ARCHITECTURE, _pool
from tests.layer_test_helper import assert_allclose, assert_array_equal, numpy

# Exact parameter counts for 32x32x3 inputs, 10 classes and the default batch
# data normalization (6,144 moving statistics of the 3,072 input elements).
# "none" by hand: 5*5*3*192+192 + 192*160+160 + 160*96+96 + 5*5*96*192+192
# + 2*(192*192+192) + 5*5*192*192+192 + 192*192+192 + 192*10+10 = 1,556,810;
# "normprop" adds gamma per filter (1,418); "bn" drops the 1,408 hidden
# biases and adds gamma, beta and two moving statistics per hidden filter.
PARAMS_32x32x3 = {"none": 1_562_954, "normprop": 1_564_372, "bn": 1_567_178}


def test_hand_count_of_the_plain_network():
    convs = [
        (5, 3, 192),
        (1, 192, 160),
        (1, 160, 96),
        (5, 96, 192),
        (1, 192, 192),
        (1, 192, 192),
        (5, 192, 192),
        (1, 192, 192),
        (1, 192, 10),
    ]
    total = sum(k * k * cin * cout + cout for k, cin, cout in convs) + 2 * 32 * 32 * 3
    assert total == PARAMS_32x32x3["none"]


@pytest.mark.parametrize("norm, count", sorted(PARAMS_32x32x3.items()))
def test_parameter_count_of_each_variant(norm, count):
    model = nin((32, 32, 3), 10, norm)
    assert model.count_params() == count
    assert model.output_shape == (None, 10)


def test_normprop_structure():
    model = nin((32, 32, 3), 10, "normprop")
    convs = [layer for layer in model.layers if isinstance(layer, NormPropConv2D)]
    assert [c.filters for c in convs] == [192, 160, 96, 192, 192, 192, 192, 192, 10]
    assert [c.get_config()["activation"] for c in convs] == ["relu"] * 8 + [None]
    assert [c.kernel_size[0] for c in convs] == [5, 1, 1, 5, 1, 1, 5, 1, 1]
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    # C(192,1,1,2): zero padding by 2 before a 1x1 convolution.
    assert model.get_layer("conv8_pad").padding == ((2, 2), (2, 2))
    assert model.get_layer("conv7").padding == "valid"


def test_max_pooling_padding_never_wins():
    """P(3,2,1,max) on all-negative inputs: zero padding would put 0s on the border."""
    x = -1.0 - np.random.default_rng(0).uniform(size=(2, 9, 9, 3)).astype("float32")
    inputs = keras.Input((9, 9, 3))
    y = numpy(keras.Model(inputs, _pool(inputs, 3, 2, 1, "max", "p"))(x))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    expected = np.stack(
        [
            np.stack(
                [
                    padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(1, 2))
                    for j in range(5)
                ],
                axis=1,
            )
            for i in range(5)
        ],
        axis=1,
    )
    assert_array_equal(y, expected)
    assert y.max() < 0


def test_average_pooling_counts_zero_padding():
    x = np.ones((1, 5, 5, 1), "float32")
    inputs = keras.Input((5, 5, 1))
    y = numpy(keras.Model(inputs, _pool(inputs, 3, 2, 1, "avg", "p"))(x))[0, :, :, 0]
    # Corner windows hold 4 of 9 real pixels, edges 6, the centre 9 (Caffe's NIN).
    assert_allclose(y, [[4 / 9, 6 / 9, 4 / 9], [6 / 9, 1, 6 / 9], [4 / 9, 6 / 9, 4 / 9]], rtol=1e-6)


def _smallest_side():
    """The smallest input side whose maps stay at least 1x1 through every row of ARCHITECTURE."""
    side = 1
    while True:
        sizes, size = [], side
        for _, _, kernel, stride, padding, _ in ARCHITECTURE:
            size = (size + 2 * padding - kernel) // stride + 1
            sizes.append(size)
        if min(sizes) >= 1:
            return side
        side += 1


def test_registry_minimum_is_the_architecture_s():
    assert BUILDERS["nin"].min_input_size == _smallest_side() == 29


@pytest.mark.parametrize("size", [29, 32, 45])
def test_accepts_inputs_from_the_minimum_up(size):
    model = nin((size, size, 1), 4, "normprop")
    assert tuple(model(np.zeros((2, size, size, 1), "float32")).shape) == (2, 4)


def test_rejects_inputs_below_the_minimum():
    with pytest.raises(ValueError, match=r"at least 29x29\. Received: input_shape=\(28, 32, 3\)"):
        nin((28, 32, 3))


def test_data_normalization_choices():
    batch = nin((32, 32, 1), 10, "normprop", data_normalization="batch")
    assert batch.get_layer("batch_data_normalization").center is False
    global_ = nin((32, 32, 1), 10, "normprop", data_normalization="global")
    assert global_.get_layer("global_data_normalization").axis == (1, 2, 3)
    given = keras.layers.Rescaling(0.5, name="given")
    assert nin((32, 32, 1), 10, "bn", data_normalization=given).get_layer("given") is given
    assert (
        len(nin((32, 32, 1), 10, "none", data_normalization=None).layers) == len(global_.layers) - 1
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(norm="wn"), r"norm in \('normprop', 'bn', 'none'\)\. Received: norm='wn'"),
        (dict(data_normalization="layer"), "Received: data_normalization='layer'"),
        (dict(num_classes=0), "Received: num_classes=0"),
        (dict(input_shape=(32, 32)), r"input_shape=\(height, width, channels\)"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nin(**kwargs)
