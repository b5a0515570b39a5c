"""Every builder's `kernel_initializer`: it reaches every convolution and dense kernel."""

import inspect
import random
import re

import keras
import numpy as np
import pytest

from keras_norms.graph import iter_layers
from keras_norms.layers import WeightNormalization
from keras_norms.models import BUILDERS, paper_builders
from keras_norms.models.arguments import check_kernel_initializer
from tests.builder_cases import CASES, build_small
from tests.layer_test_helper import numpy

# Kernels with fewer entries are left out of the variance checks: at 256
# entries the sample variance's relative standard deviation is at most
# sqrt(2 / 256) = 0.09 (normal; 0.06 uniform), so 0.35 is 4 of them.
MIN_ENTRIES = 256
VARIANCE_RTOL = 0.35


def _default_initializer(builder):
    return inspect.signature(BUILDERS[builder].build).parameters["kernel_initializer"].default


def _kernels(model):
    """`{layer name: kernel variable}` of every Conv2D and Dense layer, wrapped ones included.

    The wrapped layer of a `WeightNormalization` holds its kernel `v` as its
    own variable. Normalization layers' own parameters (DWCK's depthwise
    kernels, the learned-statistics `Conv1D` networks) are not theirs to set.
    """
    kernels = {
        layer.name: layer.kernel
        for layer in iter_layers(model)
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    }
    assert kernels
    return kernels


def _fans(shape):
    """Keras' fans: the receptive field times the input (output) features."""
    receptive_field = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def _expected_variance(initializer, shape):
    fan_in, fan_out = _fans(shape)
    return {"he_normal": 2 / fan_in, "glorot_uniform": 2 / (fan_in + fan_out)}[initializer]


@pytest.mark.parametrize("builder, norm", CASES)
def test_a_constant_initializer_sets_every_kernel(builder, norm):
    model = build_small(builder, norm, kernel_initializer=keras.initializers.Constant(0.5))
    for name, kernel in _kernels(model).items():
        np.testing.assert_array_equal(numpy(kernel), 0.5, err_msg=name)
    # Weight normalization starts at g = ||v||: its effective kernels are v.
    for layer in iter_layers(model):
        if isinstance(layer, WeightNormalization):
            np.testing.assert_allclose(numpy(layer.kernel), 0.5, rtol=1e-6)


@pytest.mark.parametrize("initializer", ["he_normal", "glorot_uniform"])
@pytest.mark.parametrize("builder", paper_builders())
def test_each_kernel_has_the_initializers_variance(builder, initializer):
    keras.utils.set_random_seed(0)
    model = build_small(builder, BUILDERS[builder].default_norm, kernel_initializer=initializer)
    checked = 0
    for name, kernel in _kernels(model).items():
        values = numpy(kernel, "float64")
        if values.size >= MIN_ENTRIES:
            expected = _expected_variance(initializer, values.shape)
            np.testing.assert_allclose(values.var(), expected, rtol=VARIANCE_RTOL, err_msg=name)
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("builder", paper_builders())
def test_he_normal_and_glorot_uniform_give_different_kernels(builder):
    kernels = {}
    for initializer in ("he_normal", "glorot_uniform"):
        keras.utils.set_random_seed(0)
        model = build_small(builder, BUILDERS[builder].default_norm, kernel_initializer=initializer)
        kernels[initializer] = {name: numpy(k) for name, k in _kernels(model).items()}
    assert kernels["he_normal"].keys() == kernels["glorot_uniform"].keys()
    for name, he in kernels["he_normal"].items():
        assert not np.array_equal(he, kernels["glorot_uniform"][name]), name


@pytest.mark.parametrize("builder", paper_builders())
def test_the_default_is_unchanged(builder):
    # Keras' glorot_uniform for the papers' builders (what they built before
    # the argument existed); plain_cnn's experiment defaults to Kaiming's.
    default = _default_initializer(builder)
    assert default == ("he_normal" if builder == "plain_cnn" else "glorot_uniform")
    weights = []
    for kwargs in ({}, {"kernel_initializer": default}):
        keras.utils.set_random_seed(1)
        weights.append(
            [
                numpy(w)
                for w in build_small(builder, BUILDERS[builder].default_norm, **kwargs).weights
            ]
        )
    for implicit, explicit in zip(*weights, strict=True):
        np.testing.assert_array_equal(implicit, explicit)


@pytest.mark.parametrize("value", ["nope", 3, None, np.ones((3, 3)), int])
@pytest.mark.parametrize("builder", paper_builders())
def test_a_bad_value_is_refused_before_any_layer_is_built(builder, value, monkeypatch):
    def no_input(*args, **kwargs):
        raise AssertionError("a layer was built")

    monkeypatch.setattr(keras, "Input", no_input)
    message = (
        f"{builder} expects a kernel_initializer that keras.initializers.get accepts: a name "
        "such as 'he_normal', a config dict, or an Initializer class or instance. "
        f"Received: kernel_initializer={value!r}"
    )
    shape = BUILDERS[builder].small_input_shape()
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        BUILDERS[builder].build(shape, 3, kernel_initializer=value)


def test_an_unseeded_instance_is_copied_per_kernel():
    # Keras gives every call of one unseeded instance the same seed: shared,
    # it would start every kernel of one shape with the same values.
    build = BUILDERS["plain_cnn"].build
    model = build((8, 8, 1), 3, depth=4, kernel_initializer=keras.initializers.HeNormal())
    conv2, conv3 = (numpy(model.get_layer(name).kernel) for name in ("conv2", "conv3"))
    assert not np.array_equal(conv2, conv3)
    # An integer seed is the user's: shared, as in Keras.
    seeded = keras.initializers.HeNormal(seed=7)
    model = build((8, 8, 1), 3, depth=4, kernel_initializer=seeded)
    conv2, conv3 = (numpy(model.get_layer(name).kernel) for name in ("conv2", "conv3"))
    np.testing.assert_array_equal(conv2, conv3)


def test_names_dicts_and_classes_each_resolve_afresh():
    for value in (
        "he_normal",
        {"class_name": "HeNormal", "config": {}},
        keras.initializers.HeNormal,
    ):
        new_initializer = check_kernel_initializer("demo", value)
        assert new_initializer() is value


def test_checking_leaves_pythons_random_state_alone():
    # Keras' unseeded initializers draw their seeds from it: a default build
    # must keep the weights it had under keras.utils.set_random_seed.
    random.seed(5)
    state = random.getstate()
    check_kernel_initializer("demo", "he_normal")
    check_kernel_initializer("demo", keras.initializers.GlorotUniform)
    assert random.getstate() == state
