"""The norm registry maps each name to its layer, configured as asked."""

import doctest

import keras
import numpy as np
import pytest

from keras_norms import layers, norms
from keras_norms.norms import NORM_LAYERS, create_norm_layer, get_norm_layer, groups_for

EXPECTED_CLASSES = {
    "bn": keras.layers.BatchNormalization,
    "mobn": layers.MeanOnlyBatchNormalization,
    "dwck": layers.DWCKNormalization,
    "learned": layers.LearnedStatisticsNormalization,
    "gn": keras.layers.GroupNormalization,
    "ln": keras.layers.LayerNormalization,
}


def test_every_name_makes_its_layer_with_the_given_arguments():
    assert set(NORM_LAYERS) == set(EXPECTED_CLASSES)
    for name, cls in EXPECTED_CLASSES.items():
        layer = create_norm_layer(name, 64, name=f"{name}_1")
        assert type(layer) is cls and layer.name == f"{name}_1"
        y = layer(np.ones((2, 4, 4, 64), "float32"))
        assert tuple(y.shape) == (2, 4, 4, 64)


def test_batch_statistics_norms_take_momentum_and_others_ignore_synchronized():
    for name, entry in NORM_LAYERS.items():
        if entry.batch_statistics:
            assert create_norm_layer(name, 8, momentum=0.5).momentum == 0.5
        else:
            layer = create_norm_layer(name, 8, synchronized=True)  # no batch statistics
            assert not hasattr(layer, "synchronized") or layer.synchronized is False


def test_group_count_divides_the_channels():
    assert [groups_for(c) for c in (64, 48, 20, 7, 1)] == [32, 24, 20, 7, 1]
    assert create_norm_layer("gn", 48).groups == 24


def test_unknown_name_is_a_value_error():
    with pytest.raises(ValueError, match=r"Expected one of .*'bn'.*Received: norm='batchnorm'"):
        get_norm_layer("batchnorm")


def test_docstring_example():
    failures, tried = doctest.testmod(norms)
    assert tried > 0 and failures == 0
