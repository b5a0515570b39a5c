"""Property-based tests of every public layer, with hypothesis.

For each layer, hypothesis draws constructor arguments and inputs:
- valid ones must give a finite output of the expected shape in the
  layer's compute dtype, and finite gradients with respect to the input and
  every trainable variable, of their shapes, in training mode (batch
  statistics) and at inference; a weight-normalized layer drawn with
  `data_init=True` is first initialized from the drawn batch;
- invalid ones (one argument replaced by a bad value: a string that looks
  like a bool, a bool for an integer, a float for an integer, None, NaN,
  infinity, a number out of range) must raise a ValueError or TypeError
  whose message names the layer and says `Received:`; so must an input of
  the wrong rank at the first call;
- the config, before and after the build, must hold plain Python only
  and rebuild the layer from a deep copy (`Wrapper.from_config` consumes
  the dict it is given).

The example budget (`settings` below: 25 draws of valid arguments and
inputs per layer, 100 of bad arguments, 25 of wrong ranks, 25 of configs)
keeps the module under 10 s on TensorFlow and 2 minutes on JAX on two CPU
cores; the examples are derandomized, so CI sees the same ones on every run.
`HYPOTHESIS_PROFILE=explore` draws new, and eight times more, examples.
"""

import copy
import math
import os
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_norms
from keras_norms.layers import (
    DWCKNormalization,
    LearnedStatisticsNormalization,
    MeanOnlyBatchNormalization,
    NormalizedConv2D,
    NormPropConv2D,
    NormPropDense,
    WeightNormalization,
)
from tests.layer_test_helper import input_and_variable_gradients

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Bad values by the kind of argument they are bad for.
NOT_BOOLS = st.sampled_from(["False", "no", "True", 0, 1, 1.0, None, "", [True]])
NOT_POSITIVE_INTS = st.one_of(
    st.booleans(),
    st.integers(max_value=0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([None, "3", (2,), [1.5]]),
)
NOT_SIZES = st.one_of(
    NOT_POSITIVE_INTS,
    st.tuples(st.integers(1, 3)),
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.integers(1, 3), st.sampled_from([0, -1, 2.0, True, None])),
)
NOT_EPSILONS = st.one_of(
    st.floats(max_value=0.0),
    st.sampled_from([math.nan, math.inf, -math.inf, None, "x", "1e-3", True]),
)
NOT_PADDINGS = st.sampled_from([None, "causal", "full", "", "valid ", 1.5, True, ("same",)])
NOT_DATA_FORMATS = st.sampled_from(
    ["NCHW", "nhwc", "channels-last", "", 1, True, ("channels_last",)]
)
NOT_MOMENTA = st.one_of(
    st.floats(max_value=0.0, exclude_max=True),
    st.floats(min_value=1.0),
    st.sampled_from([math.nan, None, "0.9", True]),
)
VALID_MOMENTA = st.floats(0.0, 0.999)
VALID_EPSILONS = st.floats(1e-8, 1.0)
# PyTorch's CPU convolution cannot take the gradient of a one-filter kernel
# from more than one input channel, as Keras' torch backend lays it out
# ("slow_conv2d: grad_weight must be contiguous"; plain keras.layers.Conv2D too).
MIN_FILTERS = 2 if keras.backend.backend() == "torch" else 1
# Activations with NormProp constants: closed forms, quadrature, PReLU, none.
NORMPROP_ACTIVATIONS = st.sampled_from(["relu", "tanh", "sigmoid", "elu", "gelu", "prelu", None])


@dataclass(frozen=True)
class LayerSpec:
    """How to draw one public layer: its arguments, inputs and bad arguments.

    `make(arguments)` builds the layer; `input_shapes(arguments)` is a
    strategy of input shapes for those arguments (batch included);
    `bad` maps an argument name to a strategy of values that must be
    refused; `wrong_rank` is an input shape of a rank the layer refuses.
    """

    make: Callable
    arguments: st.SearchStrategy
    input_shapes: Callable
    bad: dict
    wrong_rank: tuple


def _image_shapes(min_side=1, max_side=7, channels=(1, 5)):
    return st.tuples(
        st.integers(1, 3),
        st.integers(min_side, max_side),
        st.integers(min_side, max_side),
        st.integers(*channels),
    )


def _channels_first(shape_strategy, arguments):
    if arguments.get("axis") != 1:
        return shape_strategy
    return shape_strategy.map(lambda s: (s[0], s[3], s[1], s[2]))


# The layers WeightNormalization wraps here, with their input shapes.
WRAPPED = {
    "dense": (lambda: keras.layers.Dense(3), st.tuples(st.integers(1, 4), st.integers(1, 5))),
    "conv1d": (
        lambda: keras.layers.Conv1D(3, 2, padding="causal", activation="relu"),
        st.tuples(st.integers(1, 3), st.integers(2, 8), st.integers(1, 3)),
    ),
    "conv2d": (lambda: keras.layers.Conv2D(2, 3, padding="same"), _image_shapes(3, 6, (1, 3))),
}


def _weight_normalization(arguments):
    arguments = dict(arguments)
    make_inner, _ = WRAPPED[arguments.pop("layer")]
    return WeightNormalization(make_inner(), **arguments)


SPECS = {
    "WeightNormalization": LayerSpec(
        make=_weight_normalization,
        arguments=st.fixed_dictionaries(
            {
                "layer": st.sampled_from(sorted(WRAPPED)),
                "data_init": st.sampled_from([None, True, False]),
                "log_scale": st.booleans(),
            }
        ),
        input_shapes=lambda a: WRAPPED[a["layer"]][1],
        bad={
            "data_init": NOT_BOOLS.filter(lambda v: v is not None),
            "log_scale": NOT_BOOLS,
            "axis": st.sampled_from([True, 1.5, "x", "input", (0, "a"), [None]]),
            "kernel_names": st.sampled_from([5, [], [1], ("kernel", None)]),
        },
        wrong_rank=(1,),  # below every wrapped layer's input_spec
    ),
    "MeanOnlyBatchNormalization": LayerSpec(
        make=lambda a: MeanOnlyBatchNormalization(**a),
        arguments=st.fixed_dictionaries(
            {"axis": st.sampled_from([-1, 1]), "momentum": VALID_MOMENTA, "center": st.booleans()}
        ),
        input_shapes=lambda a: _channels_first(_image_shapes(), a),
        bad={"momentum": NOT_MOMENTA, "center": NOT_BOOLS, "synchronized": NOT_BOOLS},
        wrong_rank=(1,),
    ),
    "DWCKNormalization": LayerSpec(
        make=lambda a: DWCKNormalization(**a),
        arguments=st.fixed_dictionaries(
            {
                # Given sizes must divide the map: 1x1 kernels divide every size.
                "kernel_sizes": st.sampled_from([None, [1], [(1, 1), 1]]),
                "axis": st.sampled_from([-1, 1]),
                "momentum": VALID_MOMENTA,
                "epsilon": VALID_EPSILONS,
                "center": st.booleans(),
                "scale": st.booleans(),
                "weighted_variance": st.booleans(),
            }
        ),
        input_shapes=lambda a: _channels_first(_image_shapes(), a),
        bad={
            "kernel_sizes": st.one_of(
                st.sampled_from([True, 3, 3.0, "3", [], ()]),
                st.lists(NOT_SIZES, min_size=1, max_size=2),
            ),
            "momentum": NOT_MOMENTA,
            "epsilon": NOT_EPSILONS,
            "center": NOT_BOOLS,
            "scale": NOT_BOOLS,
            "weighted_variance": NOT_BOOLS,
        },
        wrong_rank=(2, 3, 5),
    ),
    "LearnedStatisticsNormalization": LayerSpec(
        make=lambda a: LearnedStatisticsNormalization(**a),
        arguments=st.fixed_dictionaries(
            {
                "network": st.sampled_from(["first", "other"]),
                "axis": st.sampled_from([-1, 1]),
                "momentum": VALID_MOMENTA,
                "epsilon": VALID_EPSILONS,
            }
        ),
        input_shapes=lambda a: _channels_first(_image_shapes(), a),
        bad={
            "network": st.sampled_from([None, 1, "second", ""]),
            "momentum": NOT_MOMENTA,
            "epsilon": NOT_EPSILONS,
            "synchronized": NOT_BOOLS,
        },
        wrong_rank=(2, 3),
    ),
    "NormPropDense": LayerSpec(
        make=lambda a: NormPropDense(**a),
        arguments=st.fixed_dictionaries(
            {
                "units": st.integers(1, 5),
                "activation": NORMPROP_ACTIVATIONS,
                "unit_norm_constraint": st.booleans(),
            }
        ),
        input_shapes=lambda a: st.tuples(st.integers(1, 4), st.integers(1, 6)),
        bad={
            "units": NOT_POSITIVE_INTS,
            "activation": st.sampled_from(["softmax", "no_such_activation", 3, keras.ops.sign]),
            "unit_norm_constraint": NOT_BOOLS,
        },
        wrong_rank=None,
    ),
    "NormPropConv2D": LayerSpec(
        make=lambda a: NormPropConv2D(**a),
        arguments=st.fixed_dictionaries(
            {
                "filters": st.integers(MIN_FILTERS, 4),
                "kernel_size": st.sampled_from([1, 2, 3, (1, 3)]),
                "strides": st.sampled_from([1, 2, (2, 1)]),
                "padding": st.just("same"),
                "activation": NORMPROP_ACTIVATIONS,
            }
        ),
        input_shapes=lambda a: _image_shapes(1, 6, (1, 3)),
        bad={
            "filters": NOT_POSITIVE_INTS,
            "kernel_size": NOT_SIZES,
            "strides": NOT_SIZES,
            "dilation_rate": NOT_SIZES,
            "padding": NOT_PADDINGS,
            "data_format": NOT_DATA_FORMATS,
            "groups": st.one_of(NOT_POSITIVE_INTS, st.just(5)),  # 5 divides no drawn filters
            "unit_norm_constraint": NOT_BOOLS,
        },
        wrong_rank=(2, 3),
    ),
    "NormalizedConv2D": LayerSpec(
        make=lambda a: NormalizedConv2D(**a),
        arguments=st.fixed_dictionaries(
            {
                "filters": st.integers(MIN_FILTERS, 4),
                "kernel_size": st.sampled_from([1, 2, 3, (3, 1)]),
                "strides": st.sampled_from([1, 2]),
                "padding": st.sampled_from(["same", "valid"]),
                "use_bias": st.booleans(),
                "use_scale": st.booleans(),
                "epsilon": VALID_EPSILONS,
                "implementation": st.sampled_from(["fast", "im2col"]),
            }
        ),
        input_shapes=lambda a: _image_shapes(3, 7, (1, 3)),
        bad={
            "filters": NOT_POSITIVE_INTS,
            "kernel_size": NOT_SIZES,
            "strides": NOT_SIZES,
            "padding": st.one_of(NOT_PADDINGS, st.sampled_from([-1, (1, 2), ((1, 1),)])),
            "data_format": NOT_DATA_FORMATS,
            "groups": st.one_of(NOT_POSITIVE_INTS, st.integers(2, 4)),
            "use_bias": NOT_BOOLS,
            "use_scale": NOT_BOOLS,
            "epsilon": NOT_EPSILONS,
            "implementation": st.sampled_from([None, "", "slow", 1]),
        },
        wrong_rank=(2, 3),
    ),
}


def test_every_public_layer_has_a_spec():
    public = {
        name
        for name in keras_norms.layers.__all__
        if name != "BatchStatisticsNormalization"  # the abstract base
    }
    assert public == set(SPECS)


# Inputs: standard normal values, scaled (0 gives a constant input) and offset.
SCALES = st.sampled_from([0.0, 1e-3, 1.0, 30.0, 1e3])
OFFSETS = st.sampled_from([0.0, -5.0, 1e3, 1e4])


def _inputs(shape, seed, scale, offset):
    rng = np.random.default_rng(seed)
    return (offset + scale * rng.standard_normal(shape)).astype("float32")


def _varies(x, scale, offset):
    """Whether `x` varies beyond float32 rounding: data init refuses constant inputs."""
    return scale >= 1e-3 * max(1.0, abs(offset)) and x.size > x.shape[-1]


def _check_finite_output_and_gradients(layer, x, training):
    y, x_grad, grads = input_and_variable_gradients(layer, x, training=training)
    name = type(layer).__name__
    assert np.all(np.isfinite(y)), f"{name}: non-finite output"
    assert x_grad.shape == x.shape and np.all(np.isfinite(x_grad)), f"{name}: input gradient"
    if training and layer.trainable_variables:  # some gradient reaches the variables
        # (at inference a batch-statistics layer's output may depend on none: DWCK
        # without gamma and beta uses its stack's weights in training only)
        assert any(grad is not None for grad in grads), f"{name}: no variable gradient"
    for variable, grad in zip(layer.trainable_variables, grads):
        if grad is None:  # a variable the output does not depend on (e.g. unused beta)
            continue
        assert grad.shape == tuple(variable.shape), f"{name}: gradient of {variable.path}"
        assert np.all(np.isfinite(grad)), f"{name}: non-finite gradient of {variable.path}"
    return y


@pytest.mark.parametrize("name", sorted(SPECS))
def test_valid_arguments_and_inputs_give_finite_outputs_and_gradients(name):
    spec = SPECS[name]

    @given(data=st.data(), seed=st.integers(0, 2**16), scale=SCALES, offset=OFFSETS)
    def check(data, seed, scale, offset):
        arguments = data.draw(spec.arguments, label="arguments")
        shape = data.draw(spec.input_shapes(arguments), label="input shape")
        x = _inputs(shape, seed, scale, offset)
        layer = spec.make(arguments)
        expected_shape = tuple(layer.compute_output_shape(shape))
        if getattr(layer, "data_init", False) and _varies(x, scale, offset):
            keras_norms.data_dependent_init(keras.Sequential([layer]), x)
        layer(x)  # builds
        for training in (True, False):
            y = _check_finite_output_and_gradients(layer, x, training)
            assert y.shape == expected_shape
            assert keras.backend.standardize_dtype(y.dtype) == layer.compute_dtype

    check()


def _assert_clear_error(error, name):
    message = str(error)
    assert name in message and "Received:" in message, message


@pytest.mark.parametrize("name", sorted(SPECS))
def test_invalid_arguments_raise_a_clear_error(name):
    spec = SPECS[name]

    # Constructors only: cheap, so four times the examples.
    @settings(max_examples=4 * settings().max_examples)
    @given(data=st.data())
    def check(data):
        arguments = dict(data.draw(spec.arguments, label="valid arguments"))
        argument = data.draw(st.sampled_from(sorted(spec.bad)), label="argument")
        arguments[argument] = data.draw(spec.bad[argument], label="bad value")
        with pytest.raises((ValueError, TypeError)) as error:
            spec.make(arguments)
        _assert_clear_error(error.value, name)

    check()


@pytest.mark.parametrize("name", sorted(n for n, s in SPECS.items() if s.wrong_rank))
def test_an_input_of_the_wrong_rank_raises_a_clear_error(name):
    spec = SPECS[name]

    @given(data=st.data())
    def check(data):
        arguments = data.draw(spec.arguments, label="arguments")
        rank = data.draw(st.sampled_from(spec.wrong_rank), label="rank")
        x = np.ones((2,) * rank, "float32")
        with pytest.raises(ValueError) as error:
            spec.make(arguments)(x)
        _assert_clear_error(error.value, name)

    check()


PLAIN_VALUES = (bool, int, float, str, type(None))


def _not_plain(value, path="config"):
    """Where `value` holds anything but plain Python, as `path: type` strings.

    Plain: bool, int, float, str, None, and lists, tuples and dicts (with
    string keys) of them, as Keras' serialized objects are; not numpy
    scalars, nor Keras' TrackedList and TrackedDict (subclasses, refused by
    type).
    """
    if type(value) in PLAIN_VALUES:
        return []
    if type(value) in (list, tuple):
        return [f for i, item in enumerate(value) for f in _not_plain(item, f"{path}[{i}]")]
    if type(value) is dict:
        found = [f"{path} key {key!r}" for key in value if type(key) is not str]
        return found + [f for k, item in value.items() for f in _not_plain(item, f"{path}[{k!r}]")]
    return [f"{path}: {type(value).__name__}"]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_config_is_plain_python_and_a_deep_copy_round_trips(name):
    spec = SPECS[name]

    @given(data=st.data())
    def check(data):
        arguments = data.draw(spec.arguments, label="arguments")
        shape = data.draw(spec.input_shapes(arguments), label="input shape")
        layer = spec.make(arguments)
        for built in (False, True):
            if built:
                layer.build(shape)
            config = layer.get_config()
            assert _not_plain(config) == [], (name, built)
            copied = type(layer).from_config(copy.deepcopy(config))
            assert copied.get_config() == config, (name, built)

    check()
