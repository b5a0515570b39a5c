"""The norm registry maps each name to its layers, configured as asked, and builders agree."""

import dataclasses
import doctest
import inspect

import keras
import numpy as np
import pytest

from keras_norms import layers, norms
from keras_norms.models import BUILDERS, register_builder
from keras_norms.models.blocks import conv_norm_act
from keras_norms.norms import (
    NORM_LAYERS,
    NORMS,
    create_norm_layer,
    get_norm_layer,
    groups_for,
    load,
    normalization_layer,
)

EXPECTED_CLASSES = {
    "bn": keras.layers.BatchNormalization,
    "mobn": layers.MeanOnlyBatchNormalization,
    "dwck": layers.DWCKNormalization,
    "dwck_weighted": layers.DWCKNormalization,
    "learned": layers.LearnedStatisticsNormalization,
    "gn": keras.layers.GroupNormalization,
    "ln": keras.layers.LayerNormalization,
    "sync_bn": keras.layers.BatchNormalization,
}
# The norms whose layer runs on this backend (sync_bn: TensorFlow only).
HERE = {
    name
    for name, norm in NORMS.items()
    if keras.backend.backend() in norm.backends or not norm.backends
}


def test_every_name_makes_its_layer_with_the_given_arguments():
    assert set(NORM_LAYERS) == set(EXPECTED_CLASSES)
    for name, cls in EXPECTED_CLASSES.items():
        if name not in HERE:
            continue
        layer = create_norm_layer(name, 64, name=f"{name}_1")
        assert type(layer) is cls and layer.name == f"{name}_1"
        y = layer(np.ones((2, 4, 4, 64), "float32"))
        assert tuple(y.shape) == (2, 4, 4, 64)


def test_batch_statistics_norms_take_momentum_and_others_ignore_synchronized():
    for name, entry in NORM_LAYERS.items():
        if name not in HERE:
            continue
        if entry.batch_statistics:
            assert create_norm_layer(name, 8, momentum=0.5).momentum == 0.5
        else:
            layer = create_norm_layer(name, 8, synchronized=True)  # no batch statistics
            assert not hasattr(layer, "synchronized") or layer.synchronized is False


def test_sync_bn_is_synchronized_keras_bn_and_refused_off_tensorflow():
    if "sync_bn" in HERE:
        layer = create_norm_layer("sync_bn", 8)  # synchronized whatever the caller passes
        assert type(layer) is keras.layers.BatchNormalization and layer.synchronized
    else:
        message = r"normalization_layer: norm 'sync_bn' runs on the tensorflow backend only\. R"
        with pytest.raises(ValueError, match=message):
            create_norm_layer("sync_bn", 8)


def test_group_count_divides_the_channels():
    assert [groups_for(c) for c in (64, 48, 20, 7, 1)] == [32, 24, 20, 7, 1]
    assert create_norm_layer("gn", 48).groups == 24


def test_unknown_name_is_a_value_error():
    with pytest.raises(ValueError, match=r"Expected one of .*'bn'.*Received: norm='batchnorm'"):
        get_norm_layer("batchnorm")


def test_docstring_example():
    failures, tried = doctest.testmod(norms)
    assert tried > 0 and failures == 0


def test_every_builder_takes_registered_norms_and_defaults_to_the_first():
    for name, builder in BUILDERS.items():
        assert set(builder.norms) <= set(NORMS), name
        signature = inspect.signature(builder.build)
        assert signature.parameters["norm"].default == builder.default_norm, name


def test_a_builder_naming_an_unknown_norm_is_refused():
    entry = dataclasses.replace(BUILDERS["plain_cnn"], name="mine", norms=("none", "batchnorm"))
    with pytest.raises(ValueError, match=r"'mine' names norms .*Received: \['batchnorm'\]"):
        register_builder(entry)
    assert "mine" not in BUILDERS


def _norm_block(norm, activation=None):
    inputs = keras.Input((6, 6, 3))
    outputs = conv_norm_act(
        inputs, 4, 3, norm=norm, name="c", kernel_initializer="ones", conv_activation=activation
    )
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("norm", sorted(HERE))
def test_the_block_builds_what_the_registry_says(norm):
    spec = NORMS[norm]
    layers_ = {layer.name: layer for layer in _norm_block(norm).layers[1:]}
    conv = layers_.get("c_wn", layers_.get("c"))
    if spec.weight_normalized:
        assert isinstance(conv, layers.WeightNormalization) and "c" not in layers_
        conv = conv.layer
    expected = load(spec.convolution) if spec.convolution else keras.layers.Conv2D
    assert type(conv) is expected
    normalization = layers_.get(f"c_{spec.suffix}")
    if spec.layer is None:
        assert len(layers_) == 1
    else:
        assert type(normalization) is load(spec.layer) and len(layers_) == 2
        for option, value in spec.options:
            assert getattr(normalization, option) == value
    if spec.convolution is None:  # a bias only where no normalization layer follows
        assert conv.use_bias == (spec.layer is None)
        fused = {layer.name: layer for layer in _norm_block(norm, activation="relu").layers}
        assert getattr(fused.get("c_wn"), "layer", fused.get("c")).use_bias


@pytest.mark.parametrize("norm", ["none", "wn", "nc", "normprop"])
def test_a_norm_without_a_layer_of_its_own_makes_no_layer(norm):
    with pytest.raises(ValueError, match=rf"normalization_layer .*Received: norm='{norm}'"):
        normalization_layer(NORMS[norm], 8)
