"""Folding WN, NormProp, mean-only BN, BN and batch-statistics layers into plain layers."""

import keras
import numpy as np
import pytest

from keras_norms import activation_moments, data_dependent_init
from keras_norms.folding import (
    FoldedNormalization,
    as_float32,
    fold,
    inference_affine,
    is_mixed_precision,
)
from keras_norms.graph import iter_layers
from keras_norms.layers import (
    DWCKNormalization,
    LearnedStatisticsNormalization,
    MeanOnlyBatchNormalization,
    NormPropConv2D,
    NormPropDense,
    WeightNormalization,
)
from keras_norms.models import BUILDERS, convpool_cnn_c, nin
from keras_norms.policies import dtype_policy
from tests.layer_test_helper import numpy, perturb_statistics


def _predict(model, x):
    return numpy(model(x, training=False), "float64")


def _kinds(model):
    return {type(layer) for layer in iter_layers(model)}


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
    with pytest.raises(TypeError, match="Received: layer of type LayerNormalization"):
        inference_affine(keras.layers.LayerNormalization())


@pytest.mark.parametrize("norm", sorted(BUILDERS["convpool_cnn_c"].norms))
def test_folded_convpool_cnn_c_equals_the_original(norm):
    rng = np.random.default_rng(0)
    model = convpool_cnn_c((16, 16, 1), 10, norm)
    x = rng.normal(size=(32, 16, 16, 1)).astype("float32")
    data_dependent_init(model, x)
    perturb_statistics(model, rng)
    folded = fold(model)
    np.testing.assert_allclose(_predict(folded, x), _predict(model, x), rtol=1e-4, atol=1e-5)
    assert not _kinds(folded) & {
        WeightNormalization,
        MeanOnlyBatchNormalization,
        keras.layers.BatchNormalization,
    }
    # The deployed network has exactly the plain network's parameters.
    plain = convpool_cnn_c((16, 16, 1), 10, "none")
    assert folded.count_params() == plain.count_params()


def test_folds_transposed_convolutions_channels_first_and_nested_models():
    rng = np.random.default_rng(1)
    inner = keras.Sequential(
        [
            keras.Input((3, 5, 5)),
            WeightNormalization(
                keras.layers.Conv2D(4, 3, use_bias=False, data_format="channels_first")
            ),
            keras.layers.BatchNormalization(axis=1),
            keras.layers.Permute((2, 3, 1)),
            WeightNormalization(keras.layers.Conv2DTranspose(6, 3, strides=2)),
            MeanOnlyBatchNormalization(),
            keras.layers.ReLU(),
        ]
    )
    inputs = keras.Input((3, 5, 5))
    model = keras.Model(inputs, inner(keras.layers.Rescaling(2.0)(inputs)))
    x = rng.normal(size=(8, 3, 5, 5)).astype("float32")
    data_dependent_init(model, x)
    perturb_statistics(model, rng)
    folded = fold(model)
    np.testing.assert_allclose(_predict(folded, x), _predict(model, x), rtol=1e-4, atol=1e-5)
    assert sum(isinstance(layer, FoldedNormalization) for layer in iter_layers(folded)) == 2


def test_folds_into_a_plain_dense_layer_without_bias():
    rng = np.random.default_rng(6)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, use_bias=False),
            keras.layers.BatchNormalization(),
        ]
    )
    perturb_statistics(model, rng)
    folded = fold(model)
    dense = folded.layers[0]
    assert type(dense) is keras.layers.Dense and dense.use_bias
    assert isinstance(folded.layers[1], FoldedNormalization)
    # Numpy reference: gamma * (x W - mean) / sqrt(var + eps) + beta.
    bn = model.layers[1]
    scale = numpy(bn.gamma, "float64") / np.sqrt(numpy(bn.moving_variance, "float64") + bn.epsilon)
    kernel = numpy(model.layers[0].kernel, "float64") * scale
    bias = numpy(bn.beta, "float64") - numpy(bn.moving_mean, "float64") * scale
    np.testing.assert_allclose(numpy(dense.kernel), kernel, rtol=1e-6)
    np.testing.assert_allclose(numpy(dense.bias), bias, rtol=1e-6, atol=1e-7)
    x = rng.normal(size=(6, 5)).astype("float32")
    np.testing.assert_allclose(_predict(folded, x), x @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_folds_into_a_depthwise_convolution():
    """Output channel i * multiplier + m of a depthwise kernel (3, 3, in, multiplier)."""
    rng = np.random.default_rng(7)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False),
            keras.layers.BatchNormalization(),
        ]
    )
    perturb_statistics(model, rng)
    folded = fold(model)
    assert isinstance(folded.layers[1], FoldedNormalization)
    bn = model.layers[1]
    scale = numpy(bn.gamma, "float64") / np.sqrt(numpy(bn.moving_variance, "float64") + bn.epsilon)
    kernel = numpy(model.layers[0].kernel, "float64") * scale.reshape(3, 2)
    np.testing.assert_allclose(numpy(folded.layers[0].kernel), kernel, rtol=1e-6)
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(_predict(folded, x), _predict(model, x), rtol=1e-5, atol=1e-5)


def test_normalization_after_an_activation_is_kept():
    """BN after a ReLU is not an affine map of a linear layer's output: not folded."""
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, activation="relu"),
            keras.layers.BatchNormalization(),
        ]
    )
    perturb_statistics(model, np.random.default_rng(2))
    folded = fold(model)
    assert isinstance(folded.layers[-1], keras.layers.BatchNormalization)
    x = np.random.default_rng(3).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(_predict(folded, x), _predict(model, x), rtol=1e-6)


def test_mean_only_bn_is_kept_when_its_input_has_another_consumer():
    """`Add([c, MOBN(c)])`: folding the MOBN into the conv would change `c` too."""
    rng = np.random.default_rng(7)
    inputs = keras.Input((6, 6, 3))
    c = WeightNormalization(keras.layers.Conv2D(4, 3, use_bias=False), name="conv")(inputs)
    mobn = MeanOnlyBatchNormalization(name="mobn")
    out = keras.layers.Add()([c, mobn(c)])
    model = keras.Model(inputs, out)
    x = rng.normal(size=(8, 6, 6, 3)).astype("float32")
    data_dependent_init(model, x)
    mobn.moving_mean.assign(rng.normal(size=4))
    mobn.beta.assign(rng.normal(size=4))
    folded = fold(model)
    np.testing.assert_allclose(_predict(folded, x), _predict(model, x), rtol=1e-5, atol=1e-5)
    assert type(folded.get_layer("mobn")) is MeanOnlyBatchNormalization
    assert type(folded.get_layer("conv")) is keras.layers.Conv2D
    assert FoldedNormalization not in _kinds(folded)


def test_batch_normalization_is_kept_when_its_input_is_a_model_output():
    rng = np.random.default_rng(8)
    inputs = keras.Input((5,))
    h = keras.layers.Dense(3, name="dense")(inputs)
    model = keras.Model(inputs, [keras.layers.BatchNormalization(name="bn")(h), h])
    perturb_statistics(model, rng)
    folded = fold(model)
    x = rng.normal(size=(6, 5)).astype("float32")
    for got, want in zip(folded(x, training=False), model(x, training=False)):
        np.testing.assert_allclose(numpy(got), numpy(want), rtol=1e-6, atol=1e-6)
    assert type(folded.get_layer("bn")) is keras.layers.BatchNormalization


@pytest.mark.parametrize(
    "make_norm",
    [
        lambda: DWCKNormalization(kernel_sizes=[(2, 2), (2, 2)]),
        lambda: LearnedStatisticsNormalization(network="first"),
    ],
    ids=["dwck", "learned"],
)
def test_batch_statistics_norm_after_a_linear_conv_is_folded_exactly(make_norm):
    rng = np.random.default_rng(9)
    conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
    norm = make_norm()
    model = keras.Sequential([keras.Input((4, 4, 3)), conv, norm, keras.layers.ReLU()])
    perturb_statistics(model, rng)
    folded = fold(model)
    assert [type(layer) for layer in folded.layers] == [
        keras.layers.Conv2D,
        FoldedNormalization,
        keras.layers.ReLU,
    ]
    # Numpy reference from the variables: gamma * (t - mean) / sqrt(var + eps) + beta.
    scale = 1.0 / np.sqrt(numpy(norm.moving_variance, "float64") + norm.epsilon)
    shift = np.zeros(4)
    if getattr(norm, "gamma", None) is not None:
        scale = scale * numpy(norm.gamma, "float64")
    if getattr(norm, "beta", None) is not None:
        shift = numpy(norm.beta, "float64")
    shift = shift - numpy(norm.moving_mean, "float64") * scale
    plain = folded.layers[0]
    np.testing.assert_allclose(numpy(plain.kernel), numpy(conv.kernel) * scale, rtol=1e-6)
    np.testing.assert_allclose(
        numpy(plain.bias), numpy(conv.bias) * scale + shift, rtol=1e-6, atol=1e-6
    )
    x = rng.normal(size=(5, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(_predict(folded, x), _predict(model, x), rtol=1e-5, atol=1e-5)


def test_folded_normprop_nin_equals_the_original():
    rng = np.random.default_rng(4)
    model = nin((32, 32, 1), 10, "normprop", data_normalization="batch")
    for layer in model.layers:
        if isinstance(layer, NormPropConv2D):
            layer.gamma.assign(rng.uniform(0.5, 1.5, size=layer.gamma.shape))
            layer.beta.assign(rng.normal(scale=0.3, size=layer.beta.shape))
    x = rng.normal(size=(8, 32, 32, 1)).astype("float32")
    folded = fold(model)
    np.testing.assert_allclose(_predict(folded, x), _predict(model, x), rtol=1e-4, atol=1e-5)
    assert NormPropConv2D not in _kinds(folded)
    rescaling = [
        layer
        for layer in iter_layers(folded.get_layer("conv1"))
        if isinstance(layer, keras.layers.Rescaling)
    ]
    c2, c1 = activation_moments("relu")
    assert len(rescaling) == 1
    assert float(rescaling[0].scale) == pytest.approx(1 / c1)
    assert float(rescaling[0].offset) == pytest.approx(-c2 / c1)


def test_folds_normprop_prelu_and_dense_layers():
    rng = np.random.default_rng(5)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            NormPropConv2D(4, 3, activation="prelu"),
            keras.layers.Flatten(),
            NormPropDense(5, activation="tanh"),
            NormPropDense(3, activation="prelu"),
            NormPropDense(2, activation=None),
        ]
    )
    for layer in model.layers:
        if getattr(layer, "alpha", None) is not None:
            layer.alpha.assign(rng.uniform(-0.5, 0.5, size=layer.alpha.shape))
    x = rng.normal(size=(8, 6, 6, 3)).astype("float32")
    folded = fold(model)
    assert not _kinds(folded) & {NormPropConv2D, NormPropDense}
    np.testing.assert_allclose(_predict(folded, x), _predict(model, x), rtol=1e-4, atol=1e-5)


def test_fold_rejects_a_layer():
    with pytest.raises(TypeError, match="keras.Model. Received: model of type Dense"):
        fold(keras.layers.Dense(3))


def test_mixed_precision_model_folds_to_float32():
    rng = np.random.default_rng(10)
    with dtype_policy("mixed_float16"):
        model = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                WeightNormalization(keras.layers.Conv2D(6, 3, use_bias=False)),
                MeanOnlyBatchNormalization(),
                keras.layers.LeakyReLU(0.1),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(4, use_bias=False),
                keras.layers.BatchNormalization(),
            ]
        )
    x = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    data_dependent_init(model, x)
    perturb_statistics(model, rng)
    assert is_mixed_precision(model)
    folded, reference = fold(model), as_float32(model)
    assert not is_mixed_precision(folded) and not is_mixed_precision(reference)
    assert all(weight.dtype == "float32" for weight in folded.weights)
    assert sum(isinstance(layer, FoldedNormalization) for layer in folded.layers) == 2
    np.testing.assert_allclose(_predict(folded, x), _predict(reference, x), rtol=1e-4, atol=1e-4)
    # float16 compute is close to, but not exactly, the float32 reference.
    np.testing.assert_allclose(_predict(model, x), _predict(reference, x), rtol=0.05, atol=0.05)


@keras.saving.register_keras_serializable(package="keras_norms_tests")
class _BlockWithAnUnusedBranch(keras.layers.Layer):
    """A custom layer holding two WN layers, one never called (so never built)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.used = WeightNormalization(keras.layers.Dense(4))
        self.unused = WeightNormalization(keras.layers.Dense(4))

    def call(self, x):
        return self.used(x)


def test_fold_copies_custom_layers_without_asking_their_sublayers():
    """A custom layer is copied whole; its built WN is folded in place, the unbuilt one left."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, _BlockWithAnUnusedBranch()(inputs))
    x = np.random.default_rng(6).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(_predict(fold(model), x), _predict(model, x), rtol=1e-6)


def test_folds_a_functional_model_that_calls_keras_ops():
    """Functional models record keras.ops calls as graph nodes; the rebuild reuses them."""
    inputs = keras.Input((8,))
    x = WeightNormalization(keras.layers.Dense(4))(inputs)
    x = keras.ops.relu(x) * 2.0
    outputs = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, outputs)
    perturb_statistics(model, np.random.default_rng(0))
    x = np.random.default_rng(40).normal(size=(3, 8)).astype("float32")
    folded = fold(model)
    np.testing.assert_allclose(numpy(folded(x)), numpy(model(x)), atol=1e-5)
    assert not any(isinstance(layer, WeightNormalization) for layer in iter_layers(folded))


@pytest.mark.parametrize("rank", [1, 2])
def test_a_grouped_convolution_folds_into_its_groups_convolutions(rank, tmp_path):
    """split_groups: the same outputs from plain convolutions (tf2onnx cannot convert Keras'
    grouped convolution); the normalization after it is folded in first."""
    conv = keras.layers.Conv1D if rank == 1 else keras.layers.Conv2D
    inputs = keras.Input((None,) * rank + (4,))
    x = WeightNormalization(conv(6, 3, groups=2, padding="same", use_bias=False))(inputs)
    x = MeanOnlyBatchNormalization()(x)
    outputs = conv(6, 1, groups=3, activation="relu")(x)
    model = keras.Model(inputs, outputs)
    perturb_statistics(model, np.random.default_rng(0))
    x = np.random.default_rng(41).normal(size=(2,) + (6,) * rank + (4,)).astype("float32")
    folded = fold(model)
    convolutions = [layer for layer in iter_layers(folded) if isinstance(layer, conv)]
    assert len(convolutions) == 2 + 3 and all(layer.groups == 1 for layer in convolutions)
    assert not any(isinstance(layer, MeanOnlyBatchNormalization) for layer in iter_layers(folded))
    np.testing.assert_allclose(numpy(folded(x)), numpy(model(x)), atol=1e-5)
    path = str(tmp_path / "folded.keras")
    folded.save(path)
    np.testing.assert_allclose(numpy(keras.models.load_model(path)(x)), numpy(model(x)), atol=1e-5)
