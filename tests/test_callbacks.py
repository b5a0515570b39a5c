"""`HiddenInputStatistics` against statistics computed independently (NormProp section 5.2);
`BatchLog` against each batch's own loss."""

import csv
import doctest
import re

import keras
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from keras_norms.layers import (
    DWCKNormalization,
    MeanOnlyBatchNormalization,
    NormPropConv2D,
    WeightNormalization,
)
from keras_norms.training import callbacks
from keras_norms.training.callbacks import BatchLog, HiddenInputStatistics

# float32 forward passes against float64 numpy ones, sums in another order.
RTOL, ATOL = 1e-5, 1e-6


def _images(n=20, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 3)).astype("float32")


def _conv_net(batch_norm=False, name="net"):
    """Conv-ReLU-Conv-[BN]-ReLU-Conv-GAP-Dense, valid padding, named layers."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
    h = keras.layers.Conv2D(5, 3, name="conv2")(h)
    if batch_norm:
        h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(6, 2, name="conv3")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="top")(h), name=name)


def _numpy_conv(x, layer):
    kernel, bias = (np.asarray(w, "float64") for w in layer.get_weights())
    windows = sliding_window_view(x, kernel.shape[:2], axis=(1, 2))  # (N, H', W', C, kh, kw)
    return np.einsum("nijcab,abco->nijo", windows, kernel) + bias


def _numpy_hidden_inputs(model, x):
    """The inputs of conv2, conv3 and top, by a float64 numpy forward pass in inference mode."""
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    h1 = relu(_numpy_conv(np.asarray(x, "float64"), model.get_layer("conv1")))
    h2 = _numpy_conv(h1, model.get_layer("conv2"))
    if "bn" in [layer.name for layer in model.layers]:
        gamma, beta, mean, variance = model.get_layer("bn").get_weights()
        h2 = gamma * (h2 - mean) / np.sqrt(variance + model.get_layer("bn").epsilon) + beta
    h2 = relu(h2)
    h3 = _numpy_conv(h2, model.get_layer("conv3"))
    return [h1, h2, h3.mean(axis=(1, 2))]


def _expected(inputs, units):
    values = [v[..., unit] for v, unit in zip(inputs, units)]
    means = np.array([v.mean() for v in values])
    stds = np.array([v.std() for v in values])
    return means, stds


def _as_arrays(statistics, count):
    means = np.array([statistics[f"hidden_input_mean_{k}"] for k in range(1, count + 1)])
    stds = np.array([statistics[f"hidden_input_std_{k}"] for k in range(1, count + 1)])
    return means, stds


def _keras_reference(network, x, statistics_callback):
    """Mean and std of each observed unit, from a separate model returning the layer inputs."""
    names, units = statistics_callback.layer_names, statistics_callback.units
    tensors = [network.get_layer(name).input for name in names]
    features = keras.Model(network.inputs, tensors).predict(x, verbose=0)
    values = [np.asarray(f, "float64")[..., unit] for f, unit in zip(features, units)]
    return np.array([v.mean() for v in values]), np.array([v.std() for v in values])


def test_statistics_equal_numpy_forward_pass_in_inference_mode():
    model = _conv_net(batch_norm=True)
    rng = np.random.default_rng(5)
    bn = model.get_layer("bn")  # moving statistics far from (0, 1): inference mode matters
    bn.set_weights(
        [
            rng.uniform(0.5, 2.0, 5),
            rng.normal(size=5),
            rng.normal(size=5),
            rng.uniform(0.2, 3.0, 5),
        ]
    )
    x = _images(20)
    statistics = HiddenInputStatistics(x, network=model, seed=3, batch_size=8)  # 8 + 8 + 4

    assert statistics.layer_names == ["conv2", "conv3", "top"]
    choice = np.random.default_rng(3)
    assert statistics.units == [int(choice.integers(c)) for c in (4, 5, 6)]
    assert all(isinstance(unit, int) for unit in statistics.units)

    measured = statistics.measure()
    assert all(type(value) is float for value in measured.values())
    means, stds = _expected(_numpy_hidden_inputs(model, x), statistics.units)
    np.testing.assert_allclose(_as_arrays(measured, 3), (means, stds), rtol=RTOL, atol=ATOL)
    assert np.all(stds > 0.05)  # a non-trivial unit in every layer


def test_population_statistics_replace_the_running_averages_for_the_measurement_only():
    model = _conv_net(batch_norm=True)
    bn = model.get_layer("bn")
    rng = np.random.default_rng(5)
    running = [rng.uniform(0.5, 2.0, 5), rng.normal(size=5), rng.normal(size=5) + 3.0]
    bn.set_weights(running + [rng.uniform(5.0, 9.0, 5)])  # far from the population's
    before = [np.array(w) for w in bn.get_weights()]
    x, population = _images(12), _images(32, seed=9)
    statistics = HiddenInputStatistics(
        x, network=model, seed=3, population_x=population, population_batch_size=16
    )
    measured = _as_arrays(statistics.measure(), 3)
    # Running averages untouched by the measurement.
    for weight, value in zip(bn.get_weights(), before):
        np.testing.assert_array_equal(weight, value)
    # Notes eq. 1.64 by hand: conv2's outputs on two batches of 16, the mean of the batch
    # means and m / (m - 1) times the mean of the batch variances (m = 16 x 4 x 4 positions).
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    h2 = _numpy_conv(
        relu(_numpy_conv(population, model.get_layer("conv1"))), model.get_layer("conv2")
    )
    batches = h2.reshape(2, 16 * 4 * 4, 5)
    m = batches.shape[1]
    population_mean = batches.mean(axis=1).mean(axis=0)
    population_variance = batches.var(axis=1).mean(axis=0) * m / (m - 1)
    bn.set_weights(before[:2] + [population_mean, population_variance])
    expected = _expected(_numpy_hidden_inputs(model, x), statistics.units)
    np.testing.assert_allclose(measured, expected, rtol=RTOL, atol=ATOL)
    # Against the running averages the measurement differs: the test can tell them apart.
    bn.set_weights(before)
    running_averages = _expected(_numpy_hidden_inputs(model, x), statistics.units)
    assert np.max(np.abs(np.subtract(measured, running_averages))) > 0.1


@pytest.mark.parametrize("seed", [0, 7])
def test_every_unit_choice_matches_separate_models(seed):
    model = _conv_net()
    x = _images(12, seed=seed)
    statistics = HiddenInputStatistics(x, network=model, seed=seed)
    measured = _as_arrays(statistics.measure(), 3)
    np.testing.assert_allclose(measured, _keras_reference(model, x, statistics), rtol=RTOL)


def _wrapped_net():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="first")(inputs)
    h = WeightNormalization(keras.layers.Conv2D(6, 3, use_bias=False), name="wn")(h)
    h = keras.layers.ReLU()(MeanOnlyBatchNormalization(name="mobn")(h))
    h = DWCKNormalization(name="dwck")(h)  # holds a depthwise convolution stack, no kernel
    h = NormPropConv2D(5, 2, name="normprop")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = WeightNormalization(keras.layers.Dense(3), name="wn_top")(h)
    return keras.Model(inputs, outputs)


def test_default_layers_skip_the_first_and_count_wrappers_once():
    model = _wrapped_net()
    x = _images(10)
    statistics = HiddenInputStatistics(x, network=model)
    assert statistics.layer_names == ["wn", "normprop", "wn_top"]
    assert callbacks.has_kernel(model.get_layer("wn"))
    assert not callbacks.has_kernel(model.get_layer("dwck"))
    assert not callbacks.has_kernel(model.get_layer("mobn"))
    np.testing.assert_allclose(
        _as_arrays(statistics.measure(), 3), _keras_reference(model, x, statistics), rtol=RTOL
    )


def test_named_layers_in_the_given_order():
    model = _wrapped_net()
    x = _images(10)
    statistics = HiddenInputStatistics(x, network=model, layers=["wn_top", "first"], seed=4)
    assert statistics.layer_names == ["wn_top", "first"]
    choice = np.random.default_rng(4)
    assert statistics.units == [int(choice.integers(5)), int(choice.integers(3))]
    measured = _as_arrays(statistics.measure(), 2)
    np.testing.assert_allclose(measured, _keras_reference(model, x, statistics), rtol=RTOL)
    # The first layer's input is the data itself.
    np.testing.assert_allclose(measured[0][1], x[..., statistics.units[1]].mean(), rtol=RTOL)


def _fit(model, x, learning_rate, statistics, path, epochs=3):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    y = np.random.default_rng(9).normal(size=(len(x), 3)).astype("float32")
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=8,
        shuffle=False,
        verbose=0,
        callbacks=[statistics, keras.callbacks.CSVLogger(str(path))],
    )
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return history, rows


KEYS = [f"hidden_input_{s}_{k}" for k in (1, 2, 3) for s in ("mean", "std")]


def _row_values(row):
    return np.array([float(row[key]) for key in KEYS])


def test_fit_logs_each_epoch_to_the_csv_after_it(tmp_path):
    model = _conv_net()
    x = _images(24)
    statistics = HiddenInputStatistics(x[:16])
    history, rows = _fit(model, x, 0.05, statistics, tmp_path / "history.csv")

    assert set(KEYS) <= set(rows[0]) and len(rows) == 3
    values = np.array([_row_values(row) for row in rows])
    recorded = np.array([[h[key] for key in KEYS] for h in statistics.history])
    np.testing.assert_allclose(values, recorded, rtol=1e-12)
    np.testing.assert_allclose(history.history["hidden_input_mean_1"], recorded[:, 0])
    # Training moves the weights, so every layer's input moves from epoch to epoch.
    initial = np.array([statistics.initial[key] for key in KEYS])
    steps = np.abs(np.diff(np.vstack([initial, values]), axis=0))
    assert np.all(steps > 1e-7)
    # The last row is measured on the weights at the end of the last epoch.
    numpy_means, numpy_stds = _expected(_numpy_hidden_inputs(model, x[:16]), statistics.units)
    last = _as_arrays(statistics.history[-1], 3)
    np.testing.assert_allclose(last, (numpy_means, numpy_stds), rtol=RTOL, atol=ATOL)


def test_zero_learning_rate_logs_constant_values(tmp_path):
    model = _conv_net()
    x = _images(24)
    statistics = HiddenInputStatistics(x[:16])
    before = _as_arrays(HiddenInputStatistics(x[:16], network=model).measure(), 3)
    _, rows = _fit(model, x, 0.0, statistics, tmp_path / "history.csv", epochs=2)
    initial = np.array([statistics.initial[key] for key in KEYS])
    for row in rows:
        np.testing.assert_allclose(_row_values(row), initial, rtol=1e-6)
    np.testing.assert_allclose(_as_arrays(statistics.initial, 3), before, rtol=1e-6)


def test_nested_network_with_preprocessed_inputs(tmp_path):
    net = _conv_net(name="inner")
    inputs = keras.Input((8, 8, 3))
    outer = keras.Model(inputs, net(keras.layers.Rescaling(0.5, offset=1.0)(inputs)))
    x = _images(24)
    preprocessed = x[:16] * 0.5 + 1.0
    statistics = HiddenInputStatistics(preprocessed, network=net, seed=1)
    _, rows = _fit(outer, x, 0.05, statistics, tmp_path / "history.csv", epochs=2)

    assert statistics.layer_names == ["conv2", "conv3", "top"]
    numpy_means, numpy_stds = _expected(_numpy_hidden_inputs(net, preprocessed), statistics.units)
    np.testing.assert_allclose(
        _row_values(rows[-1]),
        np.ravel(np.column_stack([numpy_means, numpy_stds])),
        rtol=RTOL,
        atol=ATOL,
    )
    # By default the trained model is observed: its conv layers are in the nested model.
    with pytest.raises(ValueError, match=r"HiddenInputStatistics.*nested model 'inner'.*Received"):
        outer.fit(x, np.zeros((24, 3)), epochs=1, verbose=0, callbacks=[HiddenInputStatistics(x)])


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.first, self.second = keras.layers.Dense(4), keras.layers.Dense(2)

    def call(self, x):
        return self.second(self.first(x))


def _error(match):
    return pytest.raises(ValueError, match=r"(?s)HiddenInputStatistics expects.*" + match)


def test_bad_arguments_raise_clear_errors():
    model = _conv_net()
    x = _images(4)
    subclassed = _Subclassed()
    subclassed(np.zeros((1, 3)))
    with _error(r"functional .*Received: network='.*' of type _Subclassed"):
        HiddenInputStatistics(np.zeros((4, 3)), network=subclassed)
    with _error(r"functional .*Received: network=.* of type Sequential"):
        HiddenInputStatistics(x, network=keras.Sequential([keras.layers.Dense(2)]))
    with _error(r"'nope' is not a layer of it. Received: layers=\['nope'\]"):
        HiddenInputStatistics(x, network=model, layers=["nope"])
    with _error(r"'global_average_pooling2d.*' has no kernel in it. Received: layers="):
        HiddenInputStatistics(x, network=model, layers=[model.layers[-2].name])
    with _error(r"non-empty array.*Received: x of type ndarray with shapes \[\(0, 8, 8, 3\)\]"):
        HiddenInputStatistics(x[:0], network=model)
    with _error(r"non-empty array.*Received: x of type list with shapes \[\]"):
        HiddenInputStatistics([], network=model)
    with _error(r"at least two layers with a kernel.*Received: network"):
        inputs = keras.Input((3,))
        HiddenInputStatistics(
            np.zeros((4, 3)), network=keras.Model(inputs, keras.layers.Dense(2)(inputs))
        )
    with _error(r"`batch_size` to be a positive integer. Received: batch_size=0"):
        HiddenInputStatistics(x, network=model, batch_size=0)
    with _error(r"distinct layer names"):
        HiddenInputStatistics(x, network=model, layers=["top", "top"])
    with pytest.raises(TypeError, match=r"HiddenInputStatistics expects layers.*Received: "):
        HiddenInputStatistics(x, network=model, layers=[1])
    with pytest.raises(TypeError, match=r"HiddenInputStatistics expects `batch_size`.*Received: "):
        HiddenInputStatistics(x, network=model, batch_size=2.0)


def test_subclassed_trained_model_raises_at_train_begin():
    model = _Subclassed()
    model.compile("sgd", "mse")
    x = np.zeros((4, 3), "float32")
    with _error(r"functional .*Received: network=.* of type _Subclassed"):
        model.fit(x, np.zeros((4, 2)), epochs=1, verbose=0, callbacks=[HiddenInputStatistics(x)])


def test_docstring_example_runs():
    failures, tried = doctest.testmod(callbacks, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


def _batch_log_rows(path):
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.parametrize("every", [1, 3])
def test_batch_log_gives_each_steps_own_loss_and_accuracy(tmp_path, every):
    """Learning rate 0 keeps the weights: each row must equal the loss of its own batch."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)).astype("float32"), rng.integers(0, 3, size=50)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(0.0), loss, metrics=["accuracy"])
    path = str(tmp_path / "steps.csv")
    log = BatchLog(path, every, examples=50, batch_size=16)
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[log])
    batches = [slice(0, 16), slice(16, 32), slice(32, 48), slice(48, 50)]  # the last: 2
    logits = keras.ops.convert_to_numpy(model(x))
    rows = _batch_log_rows(path)
    assert [row["step"] for row in rows] == list(range(every, 9, every))
    for row in rows:
        index = int(row["step"] - 1) % 4
        part = batches[index]
        expected_loss = float(loss(y[part], logits[part]))
        expected_accuracy = np.mean(np.argmax(logits[part], axis=1) == y[part])
        assert row["epoch"] == (row["step"] - 1) // 4
        assert row["loss"] == pytest.approx(expected_loss, rel=1e-4)
        assert row["accuracy"] == pytest.approx(expected_accuracy, abs=1e-4)


@pytest.mark.parametrize("argument", ["every", "examples", "batch_size"])
@pytest.mark.parametrize(
    "value, error, received",
    [(0, ValueError, "=0"), (True, TypeError, "=True of type bool"), (2.0, TypeError, "=2.0")],
)
def test_batch_log_refuses_a_count_that_is_not_a_positive_int(argument, value, error, received):
    kwargs = {"every": 1, "examples": 10, "batch_size": 2, argument: value}
    message = f"BatchLog expects `{argument}` to be a positive integer. Received: {argument}"
    with pytest.raises(error, match=re.escape(message + received)):
        BatchLog("steps.csv", **kwargs)
