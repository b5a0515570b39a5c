"""The ResNet-18 builder (He et al. 2016; Normalized Convolution paper, section 3)."""

import keras
import numpy as np
import pytest

from keras_norms.layers import NormalizedConv2D
from keras_norms.models import resnet18
from tests.layer_test_helper import numpy

# Exact parameter counts for 32x32x3 inputs and 10 classes. "bn" is the
# usual CIFAR ResNet-18: 11,173,962 trainable parameters plus 9,600 moving
# statistics (2 per channel of the 20 BN layers: 4,800 channels). "gn" has
# the same trainable gamma and beta and no moving statistics; "nc" and
# "none" trade them for one bias per filter (4,800 - 4,800 + 0).
PARAMS_32x32x3 = {"bn": 11_183_562, "gn": 11_173_962, "nc": 11_169_162, "none": 11_169_162}


def test_hand_count_of_the_plain_network():
    convs = [(3, 3, 64)]
    cin = 64
    for filters, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        convs += [
            (3, cin, filters),
            (3, filters, filters),
            (3, filters, filters),
            (3, filters, filters),
        ]
        if cin != filters:
            convs.append((1, cin, filters))
        cin = filters
    total = sum(k * k * i * o + o for k, i, o in convs) + 512 * 10 + 10
    assert total == PARAMS_32x32x3["none"]
    channels = sum(o for _, _, o in convs)
    assert PARAMS_32x32x3["bn"] == total - channels + 4 * channels
    assert PARAMS_32x32x3["gn"] == total - channels + 2 * channels


@pytest.mark.parametrize("norm, count", sorted(PARAMS_32x32x3.items()))
def test_parameter_count_of_each_variant(norm, count):
    assert resnet18((32, 32, 3), 10, norm).count_params() == count


def test_nc_replaces_every_convolution_and_has_no_normalization_layers():
    model = resnet18((16, 16, 1), 10, "nc")
    kinds = {type(layer) for layer in model.layers}
    assert keras.layers.Conv2D not in kinds and NormalizedConv2D in kinds
    assert not kinds & {keras.layers.BatchNormalization, keras.layers.GroupNormalization}
    assert sum(isinstance(layer, NormalizedConv2D) for layer in model.layers) == 20


def test_stems_and_group_counts():
    assert resnet18((64, 64, 3)).get_layer("stem").kernel_size == (3, 3)
    big = resnet18((96, 96, 3), 10, "gn")
    assert big.get_layer("stem").kernel_size == (7, 7) and big.get_layer("stem_pool") is not None
    assert big.get_layer("stem_gn").groups == 32
    assert big.get_layer("stage3_block1_conv1_gn").groups == 32  # 256 channels


def test_selu_variant_and_micro_batch_forward():
    model = resnet18((16, 16, 1), 4, "nc", activation="selu")
    assert model.get_layer("stem_selu").activation is keras.activations.selu
    y = model(np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype("float32"), training=True)
    assert tuple(y.shape) == (2, 4) and np.all(np.isfinite(numpy(y)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(norm="ln"), r"norm in \('bn', 'gn', 'nc', 'none'\)\. Received: norm='ln'"),
        (
            dict(activation="tanh"),
            r"activation in \('relu', 'selu'\)\. Received: activation='tanh'",
        ),
        (dict(input_shape=(32, 32)), r"input_shape=\(height, width, channels\)"),
        (dict(num_classes=-1), "Received: num_classes=-1"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet18(**kwargs)
