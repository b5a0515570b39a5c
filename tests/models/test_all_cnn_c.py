"""The ALL-CNN-C builder (DWCK paper, section 4 table and section 5.1)."""

import keras
import numpy as np
import pytest

from keras_norms.layers import DWCKNormalization, LearnedStatisticsNormalization
from keras_norms.models import all_cnn_c

# Exact parameter counts for 32x32x3 inputs and 10 classes. "none" by hand:
# 3*3*3*96+96 + 2*(3*3*96*96+96) + 3*3*96*192+192 + 3*(3*3*192*192+192)
# + 192*192+192 + 192*10+10 = 1,369,738. The 8 normalized layers have 1,248
# channels: "bn" adds 4 per channel; "dwck" 4 per channel plus its kernels
# (96 * (16+4+4+4) * 2 + 96 * 24 + 192 * 24 * 2 + 192 * 8 * 2 + 192 * 4);
# "learned" adds 152 + 7 * 172 for the statistics networks and 2 running
# averages per channel.
PARAMS_32x32x3 = {"none": 1_369_738, "bn": 1_374_730, "dwck": 1_395_466, "learned": 1_373_590}


def test_hand_counts():
    convs = [
        (3, 3, 96),
        (3, 96, 96),
        (3, 96, 96),
        (3, 96, 192),
        (3, 192, 192),
        (3, 192, 192),
        (3, 192, 192),
        (1, 192, 192),
        (1, 192, 10),
    ]
    plain = sum(k * k * cin * cout + cout for k, cin, cout in convs)
    assert plain == PARAMS_32x32x3["none"]
    assert PARAMS_32x32x3["bn"] == plain + 4 * 1248
    kernels = 96 * 28 * 2 + 96 * 24 + 192 * 24 * 2 + 192 * 8 * 2 + 192 * 4
    assert PARAMS_32x32x3["dwck"] == plain + 4 * 1248 + kernels
    assert PARAMS_32x32x3["learned"] == plain + 152 + 7 * 172 + 2 * 1248


@pytest.mark.parametrize("norm, count", sorted(PARAMS_32x32x3.items()))
def test_parameter_count_of_each_variant(norm, count):
    model = all_cnn_c((32, 32, 3), 10, norm)
    assert model.count_params() == count
    assert model.output_shape == (None, 10)


def test_dwck_stacks_follow_the_table_at_32x32_and_are_derived_otherwise():
    table = [
        layer.kernel_sizes
        for layer in all_cnn_c((32, 32, 3), 10, "dwck").layers
        if isinstance(layer, DWCKNormalization)
    ]
    assert table == [[(4, 4), (2, 2), (2, 2), (2, 2)]] * 2 + [[(4, 4), (2, 2), (2, 2)]] * 3 + [
        [(2, 2), (2, 2)]
    ] * 2 + [[(2, 2)]]
    derived = [
        layer.kernel_sizes
        for layer in all_cnn_c((16, 16, 1), 10, "dwck").layers
        if isinstance(layer, DWCKNormalization)
    ]
    assert derived == [[(4, 4), (2, 2), (2, 2)]] * 2 + [[(4, 4), (2, 2)]] * 3 + [[(4, 4)]] * 3


def test_dwck_weighted_is_dwck_with_the_weighted_variance_of_eq_8():
    def dwck_layers(norm):
        model = all_cnn_c((32, 32, 3), 10, norm)
        return [layer for layer in model.layers if isinstance(layer, DWCKNormalization)]

    plain, weighted = dwck_layers("dwck"), dwck_layers("dwck_weighted")
    assert [layer.kernel_sizes for layer in weighted] == [layer.kernel_sizes for layer in plain]
    assert all(layer.weighted_variance for layer in weighted)
    assert not any(layer.weighted_variance for layer in plain)
    assert weighted[0].name == "conv1_dwck_weighted"


def test_normalization_follows_the_relu():
    model = all_cnn_c((32, 32, 3), 10, "learned")
    names = [layer.name for layer in model.layers]
    assert names[1:4] == ["conv1", "conv1_learned", "conv2"]
    assert model.get_layer("conv1").activation is keras.activations.relu
    networks = [
        layer.network for layer in model.layers if isinstance(layer, LearnedStatisticsNormalization)
    ]
    assert networks == ["first"] + ["other"] * 7
    assert model.get_layer("conv3").strides == (2, 2)


def test_trains_and_predicts_on_other_sizes():
    model = all_cnn_c((12, 12, 1), 3, "dwck")
    assert tuple(model(np.zeros((2, 12, 12, 1), "float32"), training=True).shape) == (2, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(norm="gn"),
            r"norm in \('dwck', 'none', 'bn', 'dwck_weighted', 'learned'\)\. Received: norm='gn'",
        ),
        (dict(input_shape=(32, 32)), r"input_shape=\(height, width, channels\)"),
        (dict(num_classes=0), "Received: num_classes=0"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        all_cnn_c(**kwargs)
