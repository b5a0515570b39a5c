"""Folding WN, mean-only BN and BN into plain layers for deployment."""

import keras
import numpy as np
import pytest

from export.fold import FoldedNormalization, fold_normalization, inference_affine
from keras_norms import activation_moments, data_dependent_init
from keras_norms.data_init import iter_layers
from keras_norms.layers import (
    MeanOnlyBatchNormalization,
    NormPropConv2D,
    NormPropDense,
    WeightNormalization,
)
from keras_norms.models import convpool_cnn_c, nin
from tests.models.test_convpool_cnn_c import PARAMS_32x32x3


def _perturb_statistics(model, rng):
    """Random running statistics and offsets, so folding has work to do."""
    for layer in iter_layers(model):
        if isinstance(layer, (MeanOnlyBatchNormalization, keras.layers.BatchNormalization)):
            channels = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(size=channels))
            layer.beta.assign(rng.normal(size=channels))
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=channels))
            layer.gamma.assign(rng.uniform(0.5, 2.0, size=channels))


def _predict(model, x):
    return np.asarray(model(x, training=False))


def test_inference_affine_of_mean_only_bn_and_bn():
    mobn = MeanOnlyBatchNormalization()
    mobn.build((None, 2))
    mobn.moving_mean.assign([1.0, -2.0])
    mobn.beta.assign([0.5, 0.5])
    scale, shift = inference_affine(mobn)
    np.testing.assert_allclose(scale, [1.0, 1.0])
    np.testing.assert_allclose(shift, [-0.5, 2.5])
    bn = keras.layers.BatchNormalization(epsilon=0.01)
    bn.build((None, 1))
    bn.set_weights([np.array([2.0]), np.array([1.0]), np.array([3.0]), np.array([3.99])])
    scale, shift = inference_affine(bn)
    np.testing.assert_allclose(scale, [1.0])  # gamma / sqrt(var + eps) = 2 / 2
    np.testing.assert_allclose(shift, [-2.0])  # beta - mean * scale = 1 - 3


@pytest.mark.parametrize("norm", sorted(PARAMS_32x32x3))
def test_folded_convpool_cnn_c_equals_the_original(norm):
    rng = np.random.default_rng(0)
    model = convpool_cnn_c((16, 16, 1), 10, norm)
    x = rng.normal(size=(32, 16, 16, 1)).astype("float32")
    data_dependent_init(model, x)
    _perturb_statistics(model, rng)
    folded = fold_normalization(model)
    np.testing.assert_allclose(_predict(folded, x), _predict(model, x), rtol=1e-4, atol=1e-5)
    kinds = {type(layer) for layer in folded.layers}
    assert not kinds & {WeightNormalization, MeanOnlyBatchNormalization, keras.layers.BatchNormalization}
    # The deployed network has exactly the plain network's parameters.
    plain = convpool_cnn_c((16, 16, 1), 10, "none")
    assert folded.count_params() == plain.count_params()


def test_folds_transposed_convolutions_channels_first_and_nested_models():
    rng = np.random.default_rng(1)
    inner = keras.Sequential([
        keras.Input((3, 5, 5)),
        WeightNormalization(keras.layers.Conv2D(4, 3, use_bias=False, data_format="channels_first")),
        keras.layers.BatchNormalization(axis=1),
        keras.layers.Permute((2, 3, 1)),
        WeightNormalization(keras.layers.Conv2DTranspose(6, 3, strides=2)),
        MeanOnlyBatchNormalization(),
        keras.layers.ReLU(),
    ])
    inputs = keras.Input((3, 5, 5))
    model = keras.Model(inputs, inner(keras.layers.Rescaling(2.0)(inputs)))
    x = rng.normal(size=(8, 3, 5, 5)).astype("float32")
    data_dependent_init(model, x)
    _perturb_statistics(model, rng)
    folded = fold_normalization(model)
    np.testing.assert_allclose(_predict(folded, x), _predict(model, x), rtol=1e-4, atol=1e-5)
    assert sum(isinstance(layer, FoldedNormalization) for layer in iter_layers(folded)) == 2


def test_normalization_after_an_activation_is_kept():
    """BN after a ReLU is not an affine map of a linear layer's output: not folded."""
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(3, activation="relu"),
        keras.layers.BatchNormalization(),
    ])
    _perturb_statistics(model, np.random.default_rng(2))
    folded = fold_normalization(model)
    assert isinstance(folded.layers[-1], keras.layers.BatchNormalization)
    x = np.random.default_rng(3).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(_predict(folded, x), _predict(model, x), rtol=1e-6)


def test_folded_normprop_nin_equals_the_original():
    rng = np.random.default_rng(4)
    model = nin((32, 32, 1), 10, "normprop", data_normalization="batch")
    for layer in model.layers:
        if isinstance(layer, NormPropConv2D):
            layer.gamma.assign(rng.uniform(0.5, 1.5, size=layer.gamma.shape))
            layer.beta.assign(rng.normal(scale=0.3, size=layer.beta.shape))
    x = rng.normal(size=(8, 32, 32, 1)).astype("float32")
    folded = fold_normalization(model)
    np.testing.assert_allclose(_predict(folded, x), _predict(model, x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(layer, NormPropConv2D) for layer in iter_layers(folded))
    shift = folded.get_layer("conv1").get_layer("conv1_shift")
    c2, c1 = activation_moments("relu")
    assert float(shift.scale) == pytest.approx(1 / c1) and float(shift.offset) == pytest.approx(-c2 / c1)


def test_folds_normprop_prelu_and_dense_layers():
    rng = np.random.default_rng(5)
    model = keras.Sequential([
        keras.Input((6, 6, 3)),
        NormPropConv2D(4, 3, activation="prelu"),
        keras.layers.Flatten(),
        NormPropDense(5, activation="tanh"),
        NormPropDense(3, activation="prelu"),
        NormPropDense(2, activation=None),
    ])
    for layer in model.layers:
        if getattr(layer, "alpha", None) is not None:
            layer.alpha.assign(rng.uniform(-0.5, 0.5, size=layer.alpha.shape))
    x = rng.normal(size=(8, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(_predict(fold_normalization(model), x), _predict(model, x), rtol=1e-4, atol=1e-5)
