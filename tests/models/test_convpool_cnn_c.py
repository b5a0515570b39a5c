"""The ConvPool-CNN-C builder (section 6J, Figure 8)."""

import keras
import numpy as np
import pytest

from keras_norms.layers import MeanOnlyBatchNormalization, WeightNormalization
from keras_norms.models import convpool_cnn_c

# Exact parameter counts for a 32x32x3 input and 10 classes. "none" by hand:
# 3*3*3*96+96 + 2*(3*3*96*96+96) + 3*3*96*192+192 + 3*(3*3*192*192+192)
# + 2*(192*192+192) + 192*10+10 = 1,406,794. The 9 convolutions have
# 1,440 filters in all: "wn" adds g (1,440 + 10) and 10 `initialized` flags;
# "mobn" trades the conv biases for beta and a moving mean (+1,440); "bn"
# for gamma, beta and two moving statistics (+4,320); "wn_mobn" has g, beta
# and a moving mean per filter, and the dense layer's g, plus 10 flags.
PARAMS_32x32x3 = {
    "none": 1_406_794,
    "wn": 1_408_254,
    "mobn": 1_408_234,
    "bn": 1_411_114,
    "wn_mobn": 1_409_694,
}


def test_hand_count_of_the_plain_network():
    convs = [
        (3, 3, 96),
        (3, 96, 96),
        (3, 96, 96),
        (3, 96, 192),
        (3, 192, 192),
        (3, 192, 192),
        (3, 192, 192),
        (1, 192, 192),
        (1, 192, 192),
    ]
    total = sum(k * k * cin * cout + cout for k, cin, cout in convs) + 192 * 10 + 10
    assert total == PARAMS_32x32x3["none"]


@pytest.mark.parametrize("norm, count", sorted(PARAMS_32x32x3.items()))
def test_parameter_count_of_each_variant(norm, count):
    model = convpool_cnn_c((32, 32, 3), 10, norm)
    assert model.count_params() == count
    assert model.name == f"convpool_cnn_c_{norm}"


def test_wn_mobn_structure():
    model = convpool_cnn_c((16, 16, 1), 10, "wn_mobn")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[:6] == [
        "InputLayer",
        "GaussianNoise",
        "WeightNormalization",
        "MeanOnlyBatchNormalization",
        "LeakyReLU",
        "WeightNormalization",
    ]
    assert kinds.count("MaxPooling2D") == 2 and kinds.count("Dropout") == 2
    wn_layers = [layer for layer in model.layers if isinstance(layer, WeightNormalization)]
    assert len(wn_layers) == 10  # 9 convolutions and the dense layer
    assert [layer.layer.use_bias for layer in wn_layers] == [False] * 9 + [True]
    assert sum(isinstance(layer, MeanOnlyBatchNormalization) for layer in model.layers) == 9
    assert model.get_layer("noise").stddev == 0.15
    assert model.get_layer("conv1_act").negative_slope == pytest.approx(0.1)
    assert model.get_layer("conv7_wn").layer.padding == "valid"
    assert model.get_layer("conv8_wn").layer.kernel_size == (1, 1)


@pytest.mark.parametrize("shape", [(12, 12, 1), (16, 16, 1), (32, 32, 3), (20, 17, 2)])
def test_accepts_inputs_from_12x12_up(shape):
    model = convpool_cnn_c(shape, 7, "wn_mobn")
    y = model(np.zeros((2,) + shape, "float32"), training=False)
    assert tuple(y.shape) == (2, 7)


def test_rejects_an_unknown_norm():
    with pytest.raises(
        ValueError, match=r"norm in \('wn_mobn', 'none', 'wn', 'mobn', 'bn'\)\. Received: norm='gn'"
    ):
        convpool_cnn_c(norm="gn")


def test_rejects_inputs_smaller_than_12x12():
    with pytest.raises(ValueError, match=r"at least 12x12\. Received: input_shape=\(11, 16, 1\)"):
        convpool_cnn_c((11, 16, 1))


@pytest.mark.parametrize("shape", [(32, 32), (32, None, 3), (32, 32, 0)])
def test_rejects_malformed_input_shapes(shape):
    with pytest.raises(ValueError, match="input_shape=\\(height, width, channels\\)"):
        convpool_cnn_c(shape)


def test_rejects_bad_num_classes():
    with pytest.raises(ValueError, match="Received: num_classes=0"):
        convpool_cnn_c(num_classes=0)


def test_wn_variant_uses_weight_normalized_dense_logits():
    model = convpool_cnn_c((16, 16, 1), 10, "wn")
    assert isinstance(model.get_layer("logits_wn"), WeightNormalization)
    assert isinstance(convpool_cnn_c((16, 16, 1), 10, "bn").get_layer("logits"), keras.layers.Dense)
