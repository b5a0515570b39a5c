"""Every builder and norm under mixed precision and with XLA (`jit_compile=True`), and
the argument checks every builder shares."""

import re

import keras
import numpy as np
import pytest

from keras_norms import data_dependent_init
from keras_norms.models import BUILDERS, paper_builders
from tests.builder_cases import (
    CASES,
    build_narrow,
    build_small,
    small_input_shape,
    switch_off_noise,
    takes_width_multiplier,
)
from tests.layer_test_helper import MIXED_PRECISION_POLICIES, assert_allclose, dtype_policy

BATCH = 8
STEPS = 2
# XLA fuses and reorders float32 arithmetic; two SGD steps stay this close.
XLA_TOLERANCE = 1e-4
# Measured 2.8e-4 and 5.9e-4: weight-normalized ConvPool-CNN-C on a 12x12
# input ends on 1x1 maps whose init statistics over 8 examples are
# ill-conditioned, and training amplifies the reordering there. ResNet-18
# with BN on 8x8 (1x1 maps in stage 4) measured 1.04e-4 under JAX.
XLA_TOLERANCE_EXCEPTIONS = {
    ("convpool_cnn_c", "wn"): 2e-3,
    ("convpool_cnn_c", "wn_mobn"): 2e-3,
    ("resnet18", "bn"): 1e-3,
}


def _data(builder):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * STEPS,) + small_input_shape(builder)).astype("float32")
    return x, rng.integers(0, 3, size=len(x))


def _fit(builder, norm, x, y, jit_compile=False, build=build_small):
    keras.utils.set_random_seed(0)
    model = build(builder, norm)
    switch_off_noise(model)
    model.compile(
        keras.optimizers.SGD(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    data_dependent_init(model, x[:BATCH])
    history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return model, history.history["loss"][0]


@pytest.mark.parametrize("policy", MIXED_PRECISION_POLICIES)
@pytest.mark.parametrize("builder, norm", CASES)
def test_mixed_precision_training_is_finite_with_float32_variables(builder, norm, policy):
    x, y = _data(builder)
    # Narrow: float16 convolutions run ~30x slower than float32 on CPUs (NIN: 20 s a step).
    with dtype_policy(policy):
        model, loss = _fit(builder, norm, x, y, build=build_narrow)
    assert np.isfinite(loss)
    outputs = model(x[:BATCH], training=False)
    assert keras.backend.standardize_dtype(outputs.dtype) == policy[len("mixed_") :]
    for variable in model.weights:
        if variable.dtype != "bool":
            assert variable.dtype == "float32", variable.path
            assert np.all(np.isfinite(keras.ops.convert_to_numpy(variable))), variable.path


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="XLA compilation: TF and JAX")
@pytest.mark.parametrize("builder, norm", CASES)
def test_jit_compile_trains_like_the_uncompiled_model(builder, norm):
    x, y = _data(builder)
    compiled, compiled_loss = _fit(builder, norm, x, y, jit_compile=True)
    plain, plain_loss = _fit(builder, norm, x, y, jit_compile=False)
    tolerance = XLA_TOLERANCE_EXCEPTIONS.get((builder, norm), XLA_TOLERANCE)
    assert_allclose(compiled_loss, plain_loss, rtol=tolerance)
    for a, b in zip(compiled.weights, plain.weights):
        assert_allclose(
            keras.ops.convert_to_numpy(a).astype("float64"),
            keras.ops.convert_to_numpy(b).astype("float64"),
            rtol=tolerance,
            atol=tolerance,
            err_msg=a.path,
        )


@pytest.mark.parametrize("input_shape", [None, 32, (12, 12), (12, True, 1), (12.0, 12, 1)])
@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_builders_refuse_an_input_shape_that_is_not_three_ints(builder, input_shape):
    message = (
        f"{builder} expects input_shape=(height, width, channels) with positive integers. "
        f"Received: input_shape={input_shape!r}"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        BUILDERS[builder].build(input_shape, 3)


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_builders_refuse_a_bool_num_classes(builder):
    message = f"{builder} expects a positive integer num_classes. Received: num_classes=True"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        BUILDERS[builder].build(small_input_shape(builder), True)


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_builders_take_numpy_integers(builder):
    shape = small_input_shape(builder)
    model = BUILDERS[builder].build(tuple(np.int64(side) for side in shape), np.int64(3))
    assert model.input_shape == (None,) + shape
    assert model.output_shape == (None, 3)


WIDTH_BUILDERS = [name for name in sorted(BUILDERS) if takes_width_multiplier(name)]


@pytest.mark.parametrize("multiplier", [0.5, 1.7])
@pytest.mark.parametrize("builder", WIDTH_BUILDERS)
def test_width_multiplier_scales_every_hidden_layer_and_not_the_logits(builder, multiplier):
    norm = BUILDERS[builder].default_norm
    paper = build_small(builder, norm)
    scaled = build_small(builder, norm, width_multiplier=multiplier)
    compared = 0
    for layer in paper.layers:
        channels = layer.output.shape[-1]
        if len(layer.output.shape) != 4 or channels in (1, 3):  # the input's or the logits'
            continue
        assert scaled.get_layer(layer.name).output.shape[-1] == round(channels * multiplier)
        compared += 1
    assert compared >= 8
    assert scaled.output_shape == (None, 3)
    outputs = scaled(np.ones((2,) + small_input_shape(builder), "float32"))
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(outputs)))


def test_every_paper_builder_but_plain_cnn_takes_a_width_multiplier():
    # plain_cnn's `width` is its one filter count (the init experiment's fan-in).
    assert WIDTH_BUILDERS == sorted(set(paper_builders()) - {"plain_cnn"})


@pytest.mark.parametrize("multiplier", [0, -0.5, float("nan"), float("inf"), True, "0.5", None])
@pytest.mark.parametrize("builder", WIDTH_BUILDERS)
def test_builders_refuse_a_width_multiplier_that_is_not_positive_and_finite(builder, multiplier):
    message = (
        f"{builder} expects a positive, finite width_multiplier (1.0: the paper's widths). "
        f"Received: width_multiplier={multiplier!r}"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        build_small(builder, BUILDERS[builder].default_norm, width_multiplier=multiplier)
