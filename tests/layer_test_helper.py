"""A layer-test helper modelled on Keras' `run_layer_test`, public API only."""

import copy
import inspect
import os

import keras
import numpy as np

from keras_norms.graph import iter_layers
from keras_norms.policies import dtype_policy


def _outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _check_config_round_trips(layer):
    config = layer.get_config()
    # Deep copy: Keras' Wrapper.from_config pops the inner layer's config.
    assert type(layer).from_config(copy.deepcopy(config)).get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer)
    assert revived.get_config() == config


def _check_symbolic_call(layer, input_shape, expected_output_shape):
    inputs = keras.Input(shape=input_shape)
    outputs = layer(inputs)
    assert tuple(outputs.shape) == (None,) + tuple(expected_output_shape)
    assert outputs.dtype == layer.compute_dtype
    assert tuple(layer.compute_output_shape((None,) + tuple(input_shape))) == (
        (None,) + tuple(expected_output_shape)
    )


def _check_keras_file_round_trip(make_layer, x, tmp_dir):
    model = keras.Sequential([keras.Input(shape=x.shape[1:]), make_layer()])
    before = _outputs(model, x)
    path = os.path.join(tmp_dir, "layer_test.keras")
    model.save(path)
    np.testing.assert_array_equal(_outputs(keras.saving.load_model(path), x), before)


def _check_fit_step(make_layer, x):
    model = keras.Sequential([keras.Input(shape=x.shape[1:]), make_layer()])
    target = np.ones_like(_outputs(model, x))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit(x, target, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [np.array(w) for w in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


MIXED_PRECISION_POLICIES = ("mixed_float16", "mixed_bfloat16")
MIXED_PRECISION_STEPS = 3


def _check_mixed_precision(make_layer, x):
    """Float32 variables, compute-dtype outputs, and finite training steps."""
    for policy in MIXED_PRECISION_POLICIES:
        with dtype_policy(policy):
            layer = make_layer()
            model = keras.Sequential([keras.Input(shape=x.shape[1:]), layer])
            outputs = model(x, training=True)
            assert keras.backend.standardize_dtype(outputs.dtype) == policy[len("mixed_") :]
            for variable in layer.weights:
                if variable.dtype != "bool":
                    assert variable.dtype == "float32", (policy, variable.path)
            model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
            target = np.ones(tuple(outputs.shape), "float32")
            history = model.fit(
                x, target, batch_size=len(x), epochs=MIXED_PRECISION_STEPS, verbose=0
            )
            assert np.all(np.isfinite(history.history["loss"])), policy
            for weight in model.weights:
                assert np.all(np.isfinite(keras.ops.convert_to_numpy(weight))), weight.path
            assert np.all(np.isfinite(_outputs(model, x).astype("float32"))), policy


def run_layer_test(
    make_layer,
    input_shape,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights,
    tmp_dir,
    input_data=None,
    expected_output=None,
    tolerance=1e-6,
):
    """Run the standard checks on the layer that `make_layer()` returns.

    In order: `get_config`/`from_config` and serialize/deserialize round
    trips, symbolic call shape and dtype, weight counts, eager call (with
    `expected_output` if given), `.keras` round trip with identical
    outputs, one `fit` step that changes the trainable weights, and, under
    `mixed_float16` and `mixed_bfloat16`, float32 variables, outputs in the
    compute dtype and a few training steps with no NaN or inf (Keras adds
    loss scaling for float16).
    `input_shape` excludes the batch axis; `make_layer` must return a new,
    unbuilt layer each call (wrappers need a new inner layer too).
    """
    if input_data is None:
        rng = np.random.default_rng(0)
        input_data = rng.normal(size=(4,) + tuple(input_shape)).astype("float32")
    layer = make_layer()
    _check_config_round_trips(layer)
    _check_symbolic_call(layer, input_shape, expected_output_shape)
    assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    outputs = keras.ops.convert_to_numpy(layer(input_data))
    assert outputs.shape == (len(input_data),) + tuple(expected_output_shape)
    if expected_output is not None:
        np.testing.assert_allclose(outputs, expected_output, rtol=tolerance, atol=tolerance)
    _check_keras_file_round_trip(make_layer, input_data, tmp_dir)
    _check_fit_step(make_layer, input_data)
    _check_mixed_precision(make_layer, input_data)


def numpy(x, dtype=None):
    """`x` (a tensor of any backend, a variable or an array) as a numpy array."""
    array = keras.ops.convert_to_numpy(x)
    return array if dtype is None else array.astype(dtype)


def assert_allclose(actual, desired, **kwargs):
    """`np.testing.assert_allclose` on backend tensors (torch ones that need grad too)."""
    np.testing.assert_allclose(numpy(actual), numpy(desired), **kwargs)


def assert_array_equal(actual, desired, **kwargs):
    """`np.testing.assert_array_equal` on backend tensors."""
    np.testing.assert_array_equal(numpy(actual), numpy(desired), **kwargs)


def perturb_statistics(model, rng):
    """Random running statistics, scales and offsets in every normalization of `model`.

    Every layer (nested ones too) with a `moving_mean` gets `moving_mean`
    and `beta` drawn from N(0, 1), `moving_variance` and `gamma` from
    U(0.5, 2), where it has them, so that folding them has work to do.
    `rng` is a `np.random.Generator`.
    """
    for layer in iter_layers(model):
        if getattr(layer, "moving_mean", None) is None:
            continue
        channels = tuple(layer.moving_mean.shape)
        layer.moving_mean.assign(rng.normal(size=channels))
        if getattr(layer, "beta", None) is not None:
            layer.beta.assign(rng.normal(size=channels))
        if getattr(layer, "moving_variance", None) is not None:
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=channels))
        if getattr(layer, "gamma", None) is not None:
            layer.gamma.assign(rng.uniform(0.5, 2.0, size=channels))


def numpy_conv2d_valid(x, kernel):
    """Cross-correlation with 'valid' padding and stride 1, NHWC x HWIO, in numpy."""
    kh, kw = kernel.shape[:2]
    patches = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    return np.einsum("nhwcij,ijcf->nhwf", patches, kernel)


def input_and_variable_gradients(layer, x, training=True):
    """`(output, d loss / d x, [d loss / d v for v in trainable variables])`, numpy.

    `loss = sum(sin(layer(x)))` (the sine keeps the gradient of a normalized
    output from summing to zero), on the current backend's own autodiff:
    `tf.GradientTape`, `jax.grad` of `stateless_call`, or torch's
    `backward`. `layer` must be built.
    """
    backend = keras.backend.backend()
    variables = layer.trainable_variables
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.sin(tf.cast(y, "float32")))
        grads = tape.gradient(loss, [x] + variables)
    elif backend == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]
        # stateless_call runs `call` itself, which may take no `training`.
        takes_training = "training" in inspect.signature(layer.call).parameters
        kwargs = {"training": training} if takes_training else {}

        def loss_and_output(values, inputs):
            y, _ = layer.stateless_call(values, non_trainable, inputs, **kwargs)
            return jax.numpy.sum(jax.numpy.sin(y.astype("float32"))), y

        (_, y), (value_grads, x_grad) = jax.value_and_grad(
            loss_and_output, argnums=(0, 1), has_aux=True
        )([v.value for v in variables], x)
        grads = [x_grad] + list(value_grads)
    else:
        import torch

        x = torch.tensor(x, requires_grad=True)
        for v in variables:
            v.value.grad = None
        y = layer(x, training=training)
        torch.sin(y.float()).sum().backward()
        grads = [x.grad] + [v.value.grad for v in variables]
    grads = [None if g is None else numpy(g) for g in grads]
    return numpy(y), grads[0], grads[1:]
