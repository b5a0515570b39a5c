"""The linear-layer facts of keras_norms.layers.linear, against the kernels Keras builds."""

import keras
import pytest

from keras_norms.layers import (
    NormalizedConv2D,
    NormPropConv2D,
    NormPropDense,
    WeightNormalization,
)
from keras_norms.layers.linear import (
    LINEAR_LAYERS,
    channel_axis,
    is_plain_linear,
    kernel_output_axis,
)

# (layer, input shape, expected channel axis); every kernel's output axis must hold `units`.
CASES = [
    (keras.layers.Dense(5), (None, 3), -1),
    (keras.layers.Dense(5), (None, 4, 3), -1),
    (keras.layers.Conv1D(5, 3), (None, 8, 3), -1),
    (keras.layers.Conv1D(5, 3, data_format="channels_first"), (None, 3, 8), 1),
    (keras.layers.Conv2D(5, 3), (None, 8, 8, 3), -1),
    (keras.layers.Conv2D(5, 3, data_format="channels_first"), (None, 3, 8, 8), 1),
    (keras.layers.Conv3D(5, 2), (None, 4, 4, 4, 3), -1),
    (keras.layers.Conv1DTranspose(5, 3), (None, 8, 3), -1),
    (keras.layers.Conv2DTranspose(5, 3, data_format="channels_first"), (None, 3, 6, 6), 1),
    (keras.layers.Conv3DTranspose(5, 2), (None, 4, 4, 4, 3), -1),
]


@pytest.mark.parametrize("layer, shape, expected_channel_axis", CASES, ids=lambda c: repr(c)[:30])
def test_axes_match_the_kernel_and_the_output(layer, shape, expected_channel_axis):
    layer.build(shape)
    assert isinstance(layer, LINEAR_LAYERS) and is_plain_linear(layer)
    assert layer.kernel.shape[kernel_output_axis(layer)] == 5
    other_axes = [
        s
        for a, s in enumerate(layer.kernel.shape)
        if a != layer.kernel.ndim + kernel_output_axis(layer)
    ]
    assert 5 not in other_axes
    assert channel_axis(layer) == expected_channel_axis
    assert layer.compute_output_shape(shape)[channel_axis(layer)] == 5


def test_transposed_convolutions_have_their_output_axis_second_to_last():
    assert kernel_output_axis(keras.layers.Conv2DTranspose(5, 3)) == -2
    assert kernel_output_axis(keras.layers.Conv2D(5, 3)) == -1


@pytest.mark.parametrize(
    "layer",
    [NormPropConv2D(4, 3), NormalizedConv2D(4, 3), NormPropDense(4)],
    ids=lambda layer: type(layer).__name__,
)
def test_normalizing_layers_are_not_plain_linear(layer):
    assert not is_plain_linear(layer)


def test_rejects_other_layers():
    with pytest.raises(TypeError, match=r"Received: layer=.* of type DepthwiseConv2D"):
        kernel_output_axis(keras.layers.DepthwiseConv2D(3))
    assert not is_plain_linear(keras.layers.DepthwiseConv2D(3))


@pytest.mark.parametrize(
    "layer, expected",
    [
        (keras.layers.DepthwiseConv2D(3, data_format="channels_first"), 1),
        (keras.layers.BatchNormalization(), -1),
        (WeightNormalization(keras.layers.Conv1D(2, 3, data_format="channels_first")), 1),
        (keras.layers.TimeDistributed(keras.layers.Conv2D(2, 3, data_format="channels_first")), 1),
        (WeightNormalization(keras.layers.Dense(2)), -1),
    ],
    ids=lambda case: type(case).__name__,
)
def test_channel_axis_of_any_layer_and_through_wrappers(layer, expected):
    assert channel_axis(layer) == expected
