"""replace_normalization: normalization surgery on models built the way users build them.

The oracle is the model before surgery: Keras' own BatchNormalization with
statistics as after training. Targets that keep the inference map must give
its outputs; the folded kernels are also checked against the formula
written out in numpy here.
"""

import json
import warnings

import keras
import numpy as np
import pytest

from keras_norms import replace_normalization
from keras_norms.graph import iter_layers
from keras_norms.layers import (
    DWCKNormalization,
    LearnedStatisticsNormalization,
    MeanOnlyBatchNormalization,
    NormalizedConv2D,
    WeightNormalization,
)
from keras_norms.models import BUILDERS, resnet18
from keras_norms.norms import NORMS
from keras_norms.surgery import TARGETS

# Targets whose inference map equals batch normalization's (weights folded or carried).
EXACT = ("mobn", "dwck", "dwck_weighted", "wn", "wn_mobn", "sync_bn")
# Keras synchronizes batch normalization on TensorFlow only (sync_bn is refused elsewhere).
BACKEND_TARGETS = [
    target for target in TARGETS if target != "sync_bn" or keras.backend.backend() == "tensorflow"
]
NEW_NORM = {
    "mobn": MeanOnlyBatchNormalization,
    "dwck": DWCKNormalization,
    "learned": LearnedStatisticsNormalization,
    "gn": keras.layers.GroupNormalization,
    "ln": keras.layers.LayerNormalization,
}


def _trained_statistics(model, seed=0):
    """Give every BatchNormalization of `model` statistics and affine weights as after training."""
    rng = np.random.default_rng(seed)
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, c),
                    rng.normal(size=c),
                    rng.normal(size=c) * 0.3,
                    rng.uniform(0.3, 3.0, c),
                ]
            )
    return model


def _images(n=4, shape=(8, 8, 3), seed=1):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


def _conv_net():
    """Conv+BN, depthwise+BN, BN after a ReLU, a residual BN, a Dense+BN head."""
    inputs = keras.Input((8, 8, 3), name="images")
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    y = keras.layers.ReLU(name="relu2")(x)
    y = keras.layers.BatchNormalization(name="after_relu_bn")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(5, name="dense")(x)
    x = keras.layers.BatchNormalization(name="dense_bn")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return _trained_statistics(keras.Model(inputs, outputs, name="net"))


def _replace(model, target, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return replace_normalization(model, target, **kwargs)


def _out(model, x, training=False):
    return keras.ops.convert_to_numpy(model(x, training=training))


def _max_relative(a, b):
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12)


def _types(model):
    return [type(layer) for layer in iter_layers(model)]


@pytest.mark.parametrize("target", BACKEND_TARGETS)
def test_every_target_keeps_or_changes_the_inference_map_as_reported(target):
    model = _conv_net()
    x = _images()
    new, report = _replace(model, target)
    assert len(report.replaced) + len(report.refused) == 4
    exact = {r.layer: r.exact for r in report.replaced}
    if target in EXACT:
        # mean-only BN after the ReLU has no kernel to take BN's scale: it differs there
        assert exact == {n: not (target == "mobn" and n == "after_relu_bn") for n in exact}
    else:
        assert not any(exact.values())
    change = _max_relative(_out(new, x), _out(model, x))
    # refused normalizations stay as they were
    assert change < 1e-5 if all(exact.values()) else change > 1e-3
    assert report.exact == (all(exact.values()) and not report.refused)
    assert report.params_before == model.count_params()
    assert report.params_after == new.count_params()


def test_report_names_what_was_replaced_and_why_the_rest_stays():
    model = _conv_net()
    with pytest.warns(UserWarning, match="kept 1 of 4 normalizations of net"):
        _, report = replace_normalization(model, "wn")
    assert [r.layer for r in report.replaced] == ["conv_bn", "dw_bn", "dense_bn"]
    refused = {r.layer: r.reason for r in report.refused}
    assert set(refused) == {"after_relu_bn"}
    assert "no linear layer without activation feeds it alone" in refused["after_relu_bn"]
    _, report = _replace(model, "nc")
    reasons = {r.layer: r.reason for r in report.refused}
    assert "dw is a DepthwiseConv2D" in reasons["dw_bn"]
    assert "dense is a Dense" in reasons["dense_bn"]
    _, report = _replace(model, "dwck")
    (refusal,) = report.refused
    assert refusal.layer == "dense_bn" and "DWCKNormalization" in refusal.reason
    assert "dense_bn: kept: " in str(report)


def test_a_residual_input_keeps_its_normalization_for_kernel_targets():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    y = keras.layers.BatchNormalization(name="bn")(x)
    model = _trained_statistics(keras.Model(inputs, keras.layers.Add()([x, y])))
    _, report = _replace(model, "wn")
    assert [r.layer for r in report.refused] == ["bn"]
    new, report = _replace(model, "gn")  # a norm target does not need the conv
    assert [r.layer for r in report.replaced] == ["bn"]


def test_wn_folds_batch_normalization_into_kernel_bias_and_g():
    model = _conv_net()
    new, report = _replace(model, "wn")
    eps = 1e-3  # Keras BatchNormalization's default
    for linear, norm, axes in (("conv", "conv_bn", (0, 1, 2)), ("dense", "dense_bn", (0,))):
        gamma, beta, mean, var = model.get_layer(norm).get_weights()
        w, b = model.get_layer(linear).get_weights()
        scale = gamma / np.sqrt(var + eps)
        wrapper = new.get_layer(linear)
        assert isinstance(wrapper, WeightNormalization)
        v = wrapper.layer.kernel.numpy()
        np.testing.assert_allclose(v, w * scale, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(wrapper.layer.bias.numpy(), (b - mean) * scale + beta, atol=1e-5)
        norm_v = np.sqrt(np.sum(np.square(v), axis=axes))
        np.testing.assert_allclose(wrapper.g.numpy(), norm_v, rtol=1e-5)
        assert bool(wrapper.initialized.numpy())
    # the depthwise kernel (3, 3, 6, 1): output channel i scales input channel i's filter
    gamma, _, _, var = model.get_layer("dw_bn").get_weights()
    w = model.get_layer("dw").get_weights()[0]
    v = new.get_layer("dw").layer.kernel.numpy()
    np.testing.assert_allclose(v, w * (gamma / np.sqrt(var + eps))[:, None], rtol=1e-5)
    names = {layer.name for layer in iter_layers(new)}
    assert not {"conv_bn", "dw_bn", "dense_bn"} & names and "after_relu_bn" in names


def test_weight_normalized_model_trains_like_the_inference_map():
    """WN has no batch statistics: in training the converted model computes BN's inference map."""
    model = _conv_net()
    x = _images()
    new, _ = _replace(model, "wn")
    bn_after_relu = new.get_layer("after_relu_bn")
    bn_after_relu.trainable = False  # the one BN kept; frozen BN runs in inference mode
    np.testing.assert_allclose(_out(new, x, training=True), _out(model, x), atol=1e-5)


@pytest.mark.parametrize("target", ["gn", "ln", "dwck", "mobn", "learned"])
def test_norm_targets_carry_the_weights_they_share(target):
    model = _conv_net()
    new, report = _replace(model, target)
    old = model.get_layer("after_relu_bn")  # no linear layer before it: carried as is
    layer = new.get_layer("after_relu_bn")
    assert type(layer) is NEW_NORM[target]
    (entry,) = [r for r in report.replaced if r.layer == "after_relu_bn"]
    expected = {w.name for w in layer.weights} & {"gamma", "beta", "moving_mean", "moving_variance"}
    assert set(entry.carried) == expected
    for weight in layer.weights:
        if weight.name in expected:
            np.testing.assert_array_equal(weight.numpy(), getattr(old, weight.name).numpy())
    assert np.all(np.asarray(layer.axis) % 4 == 3)  # the channel axis
    assert target == "mobn" or layer.epsilon == old.epsilon  # MOBN divides by nothing


def test_nc_replaces_conv_and_batch_normalization_with_normalized_convolution():
    model = _conv_net()
    new, report = _replace(model, "nc")
    nc = new.get_layer("conv")
    assert type(nc) is NormalizedConv2D and nc.use_bias
    np.testing.assert_array_equal(nc.kernel.numpy(), model.get_layer("conv").kernel.numpy())
    assert [r.layer for r in report.replaced] == ["conv_bn"]


def test_a_model_built_by_surgery_matches_the_builder_of_that_norm():
    """ResNet-18 BN converted to GN has the parameters of the GN builder's ResNet-18."""
    converted, report = _replace(resnet18((16, 16, 1), 10, norm="bn"), "gn")
    built = resnet18((16, 16, 1), 10, norm="gn")
    assert converted.count_params() == built.count_params()
    assert report.params_after == built.count_params()
    assert sorted(t.__name__ for t in _types(converted)) == sorted(
        t.__name__ for t in _types(built)
    )


def _sequential():
    return _trained_statistics(
        keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Conv2D(4, 3, name="conv"),
                keras.layers.BatchNormalization(name="bn"),
                keras.layers.ReLU(),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2),
            ],
            name="seq",
        )
    )


def _sequential_without_input():
    """A Sequential model without keras.Input, built by its first call, as users often do."""
    layers = [
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ]
    model = keras.Sequential(layers, name="lazy")
    model(_images())
    return _trained_statistics(model)


def _nested_functional():
    inner = _sequential()
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(3, 1, name="outer_conv")(inputs)
    x = keras.layers.BatchNormalization(name="outer_bn")(x)
    return _trained_statistics(keras.Model(inputs, inner(x), name="outer"), seed=3)


def _nested_model_in_model():
    block_in = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(3, 3, padding="same", name="block_conv")(block_in)
    y = keras.layers.BatchNormalization(name="block_bn")(y)
    block = keras.Model(block_in, keras.layers.ReLU()(y), name="block")
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(block(block(inputs))))
    return _trained_statistics(keras.Model(inputs, outputs, name="twice"))


def _functional_in_sequential():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="inner_conv")(inputs)
    x = keras.layers.BatchNormalization(name="inner_bn")(x)
    inner = keras.Model(inputs, keras.layers.ReLU()(x), name="inner")
    head = [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
    model = keras.Sequential([keras.Input((8, 8, 3)), inner, *head], name="outer_seq")
    return _trained_statistics(model)


@pytest.mark.parametrize(
    "build",
    [
        _sequential,
        _sequential_without_input,
        _nested_functional,
        _nested_model_in_model,
        _functional_in_sequential,
    ],
)
@pytest.mark.parametrize("target", ["wn", "mobn", "gn"])
def test_sequential_and_nested_models(build, target, tmp_path):
    model = build()
    x = _images()
    new, report = _replace(model, target)
    assert not report.refused and report.replaced
    assert type(new) is type(model) and new.name == model.name
    change = _max_relative(_out(new, x), _out(model, x))
    assert change < 1e-5 if target in EXACT else change > 1e-3
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in iter_layers(new))
    path = str(tmp_path / "m.keras")
    new.save(path)
    np.testing.assert_allclose(_out(keras.models.load_model(path), x), _out(new, x), atol=1e-6)


def test_a_keras_hub_backbone_converts():
    """A keras-hub backbone (a functional model of its own class) comes back functional."""
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(32, 32, 3),
    )
    _trained_statistics(backbone)
    x = _images(2, (32, 32, 3))
    new, report = _replace(backbone, "wn")
    assert len(report.replaced) == 6 and report.exact
    assert _max_relative(_out(new, x), _out(backbone, x)) < 1e-5
    assert isinstance(new, keras.Model) and not isinstance(new, keras_hub.models.Backbone)
    new, report = _replace(backbone, "gn")
    assert len(report.replaced) == 6 and not report.refused
    assert any(isinstance(layer, keras.layers.GroupNormalization) for layer in iter_layers(new))


def test_normalization_inside_a_wrapper_is_reported_not_replaced():
    inputs = keras.Input((3, 4))
    x = keras.layers.TimeDistributed(keras.layers.BatchNormalization(name="bn"))(inputs)
    x = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    with pytest.warns(UserWarning, match="kept 1 of 1"):
        _, report = replace_normalization(keras.Model(inputs, x), "gn")
    assert (
        report.refused[0].layer == "bn" and "held inside another layer" in report.refused[0].reason
    )


def test_the_given_model_is_left_as_it_was():
    model = _conv_net()
    before = [w.numpy().copy() for w in model.weights]
    new, _ = _replace(model, "wn_mobn")
    assert not {id(w) for w in new.weights} & {id(w) for w in model.weights}
    new.compile("sgd", "mse")
    new.fit(_images(8), np.ones((8, 3)), epochs=1, verbose=0)
    for old, now in zip(before, model.weights):
        np.testing.assert_array_equal(old, now.numpy())


def test_x_init_initializes_the_weight_normalized_layers_from_data():
    """Salimans & Kingma section 3: every pre-activation has mean 0, std 1 on the init batch."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(5, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, x)
    x_init = _images(64) * 3.0 + 1.0
    new, report = _replace(model, "wn", x_init=x_init)
    t = _out(new, x_init).reshape(-1, 5)
    np.testing.assert_allclose(t.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(t.std(axis=0), 1.0, rtol=1e-3)
    assert not report.replaced[0].exact


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.bn = keras.layers.BatchNormalization()

    def call(self, x):
        return self.bn(x)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"target": "bn"}, ValueError, "expects target in"),
        ({"target": 3}, ValueError, "Received: target=3"),
        ({"target": "gn", "source": "BatchNormalization"}, TypeError, "Received: source="),
        ({"target": "gn", "x_init": np.zeros((1, 8, 8, 3))}, ValueError, "x_init initializes"),
        ({"target": "gn", "source": keras.layers.LayerNormalization}, ValueError, "found no"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        replace_normalization(_conv_net(), **kwargs)


def test_what_is_no_model_or_not_built_is_refused():
    with pytest.raises(TypeError, match="expects a keras.Model. Received: model of type Dense"):
        replace_normalization(keras.layers.Dense(2), "gn")
    with pytest.raises(ValueError, match="expects a built model .*Received: model .* built=False"):
        replace_normalization(_Subclassed(), "gn")
    with pytest.raises(ValueError, match="expects a built model"):
        replace_normalization(keras.Sequential([keras.layers.BatchNormalization()]), "gn")


@pytest.mark.parametrize("target", [t for t in TARGETS if NORMS[t].replaces_linear])
def test_a_subclassed_model_refuses_the_targets_that_need_its_graph(target):
    model = _Subclassed()
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match=rf"replaces normalization layers alone .*'{target}'"):
        replace_normalization(model, target)
    assert isinstance(model.bn, keras.layers.BatchNormalization)  # unchanged


class _Block(keras.layers.Layer):
    """A custom layer holding its normalization as an attribute."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)
        self.bn = keras.layers.BatchNormalization()

    def call(self, x, training=None):
        return keras.ops.relu(self.bn(self.conv(x), training=training))


class _Net(keras.Model):
    """timm's case: normalizations held as attributes, in lists and dicts, in custom layers,
    in a Sequential submodel and in a wrapper."""

    def __init__(self):
        super().__init__(name="held_norms")
        self.stem = keras.layers.Conv2D(8, 3, padding="same")
        self.stem_bn = keras.layers.BatchNormalization(name="stem_bn")
        self.blocks = [_Block(name=f"block{i}") for i in range(2)]
        self.norms = {"head": keras.layers.BatchNormalization(name="head_bn")}
        self.tail = keras.Sequential(
            [
                keras.layers.Conv2D(4, 1, name="tail"),
                keras.layers.BatchNormalization(name="tail_bn"),
            ]
        )
        self.frames = keras.layers.TimeDistributed(keras.layers.BatchNormalization(name="td_bn"))
        self.pool = keras.layers.GlobalAveragePooling2D()

    def call(self, x, training=None):
        x = self.stem_bn(self.stem(x), training=training)
        for block in self.blocks:
            x = block(x, training=training)
        x = self.norms["head"](x, training=training)
        x = self.frames(x, training=training)
        return self.pool(self.tail(x, training=training))


def _held_batch_normalizations(model):
    return [layer for layer in iter_layers(model) if type(layer) is keras.layers.BatchNormalization]


@pytest.mark.parametrize("target", [t for t in BACKEND_TARGETS if not NORMS[t].replaces_linear])
def test_a_subclassed_model_is_converted_in_place_wherever_it_holds_a_normalization(target):
    keras.utils.set_random_seed(3)
    model = _Net()
    x = _images(4, (8, 8, 3))
    model(x)
    _trained_statistics(model)
    before = _out(model, x)
    weights_before = len(model.weights)
    new, report = _replace(model, target)
    assert new is model
    # DWCK and learned statistics take images; TimeDistributed gives its BN (H, W, C) frames.
    kept = {"td_bn"} if target in ("dwck", "dwck_weighted", "learned") else set()
    assert {r.layer for r in report.refused} == kept
    assert {"stem_bn", "head_bn", "tail_bn", "td_bn"} - kept <= {r.layer for r in report.replaced}
    assert len(report.replaced) == 6 - len(kept)
    new_type = NEW_NORM.get(target, DWCKNormalization)  # dwck_weighted: DWCK, one option
    if target == "sync_bn":
        assert all(layer.synchronized for layer in _held_batch_normalizations(model))
    else:
        assert [layer.name for layer in _held_batch_normalizations(model)] == sorted(kept)
        for layer in (model.stem_bn, model.blocks[1].bn, model.norms["head"]):
            assert type(layer) is new_type
        assert (type(model.frames.layer) is new_type) == (not kept)
    # The model tracks the new layers only: their weights, none of the old ones.
    tracked = {id(v) for v in model.weights}
    held = [model.stem_bn, model.blocks[0].bn, model.norms["head"], model.tail.layers[-1]]
    assert all(id(v) in tracked for layer in held for v in layer.weights)
    assert len(model.weights) == len({id(v) for v in model.weights})
    assert report.params_after == model.count_params()
    change = _max_relative(_out(model, x), before)
    exact = target in ("sync_bn", "dwck", "dwck_weighted")  # every weight carried
    assert (change < 1e-5) == exact, change
    assert all(r.exact for r in report.replaced) == exact or target == "mobn"
    model.compile(keras.optimizers.SGD(0.1), "mse")  # a training step reaches the new layers
    last = model.tail.layers[-1]
    start = [keras.ops.convert_to_numpy(v) for v in last.trainable_weights]
    assert np.isfinite(model.train_on_batch(x, np.ones((4, 4), "float32")))
    after = [keras.ops.convert_to_numpy(v) for v in last.trainable_weights]
    assert not all(np.array_equal(a, b) for a, b in zip(start, after))
    if target in ("sync_bn", "gn", "ln"):  # the same weights (gn, ln: no moving statistics)
        assert len(model.weights) == weights_before - 12 * (target != "sync_bn")


class _Holder(keras.layers.Layer):
    """A custom layer given the normalization it applies."""

    def __init__(self, norm, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(8, 3, padding="same")
        self.norm = norm

    def call(self, x, training=None):
        return self.norm(self.conv(x), training=training)


class _Shared(keras.Model):
    """One normalization held by the model and by a custom layer it holds."""

    def __init__(self):
        super().__init__(name="shared")
        self.shared = keras.layers.BatchNormalization(name="shared_bn")
        self.block = _Holder(self.shared, name="block")

    def call(self, x, training=None):
        return self.shared(self.block(x, training=training), training=training)


def test_a_normalization_held_by_two_owners_is_swapped_in_both():
    model = _Shared()
    model(_images(2, (8, 8, 3)))
    new, report = _replace(model, "gn")
    assert [r.layer for r in report.replaced] == ["shared_bn"] and not report.refused
    assert model.shared is model.block.norm
    assert type(model.shared) is keras.layers.GroupNormalization
    assert not _held_batch_normalizations(model)
    assert not any("moving_mean" in v.path for v in model.weights)  # none still tracked
    assert np.isfinite(_out(model, _images(2, (8, 8, 3)))).all()


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="refused off TensorFlow")
def test_sync_bn_off_tensorflow_is_refused_and_says_why():
    with pytest.raises(ValueError, match=r"'sync_bn' runs on the tensorflow backend only"):
        replace_normalization(_conv_net(), "sync_bn")


APPLICATIONS = [name for name, builder in sorted(BUILDERS.items()) if builder.application]


@pytest.fixture(scope="module")
def applications():
    return {
        name: _trained_statistics(BUILDERS[name].build((32, 32, 3), 4, "bn"))
        for name in APPLICATIONS
    }


# dwck_weighted is dwck with one option (weighted_variance), sync_bn Keras BN with one
# (synchronized): their replacement takes the same path as dwck's and gn's, which the fast
# per-target tests above run; whole applications run once per path.
APPLICATION_TARGETS = [t for t in TARGETS if t not in ("dwck_weighted", "sync_bn")]


@pytest.mark.slow
@pytest.mark.parametrize("target", APPLICATION_TARGETS)
@pytest.mark.parametrize("application", APPLICATIONS)
def test_applications_convert_train_and_round_trip(applications, application, target, tmp_path):
    model = applications[application]
    x = _images(2, (32, 32, 3))
    new, report = _replace(model, target)
    assert report.replaced
    if target == "nc":  # depthwise convolutions keep their BN
        assert application == "resnet50" or report.refused
    else:
        assert not report.refused, report
    change = _max_relative(_out(new, x), _out(model, x))
    if target in EXACT:
        assert change < 1e-4 and report.exact
    new.compile(keras.optimizers.SGD(1e-3), "mse", run_eagerly=True)
    loss = new.train_on_batch(x, np.zeros((2, 4), "float32"))
    assert np.isfinite(loss)
    path = str(tmp_path / "m.keras")
    new.save(path)
    np.testing.assert_allclose(_out(keras.models.load_model(path), x), _out(new, x), atol=1e-5)


@pytest.mark.slow
def test_the_cli_trains_a_converted_application(tmp_path):
    from keras_norms.training import cli

    run = tmp_path / "run"
    argv = ["--model", "mobilenet_v2", "--norm", "gn", "--epochs", "1", "--output", str(run)]
    argv += ["--train-examples", "64", "--test-examples", "32", "--verbose", "0"]
    assert cli.main(argv) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["norm"] == "gn" and np.isfinite(metrics["test_loss"])
    names = {
        type(layer).__name__ for layer in iter_layers(keras.models.load_model(run / "model.keras"))
    }
    assert "GroupNormalization" in names and "BatchNormalization" not in names


@pytest.mark.slow
@pytest.mark.parametrize(
    "application, target, side",
    # tf2onnx 1.17 turns NormalizedConv2D's transposes on a 1x1 map into reshapes of the
    # wrong shape (EfficientNetB0's last stages at 32x32): 64x64 keeps every map larger
    [("resnet50", "wn", 32), ("mobilenet_v2", "gn", 32), ("efficientnet_b0", "nc", 64)],
)
def test_converted_applications_export_to_every_format(application, target, side, tmp_path):
    from keras_norms.export.exporter import export_and_check

    model = _trained_statistics(BUILDERS[application].build((side, side, 3), 4, "bn"))
    new, _ = _replace(model, target)
    report = export_and_check(new, str(tmp_path), _images(4, (side, side, 3)))
    for key in ("saved_model", "tflite", "onnx"):
        assert report[f"{key}_max_abs_diff"] <= 1e-4


@pytest.mark.slow
def test_exact_conversions_export_the_same_graph_as_the_original(applications, tmp_path):
    """Folded, MobileNetV2 with wn, wn_mobn or mobn is the BN original's ONNX graph, op for op."""
    from keras_norms.export.exporter import export_onnx, onnx_op_counts
    from keras_norms.folding import fold

    model = applications["mobilenet_v2"]
    counts = {}
    for target in ("bn", "wn", "wn_mobn", "mobn"):
        new = model if target == "bn" else _replace(model, target)[0]
        counts[target] = onnx_op_counts(export_onnx(fold(new), str(tmp_path / f"{target}.onnx")))
    assert counts["bn"]["Conv"] == 52
    assert counts["wn"] == counts["bn"] and counts["wn_mobn"] == counts["bn"]
    assert counts["mobn"] == counts["bn"]
