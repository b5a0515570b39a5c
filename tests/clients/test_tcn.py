"""A real client: a keras-tcn style temporal convolutional network with weight normalization.

keras-tcn (philipperemy/keras-tcn) builds the TCN of Bai, Kolter & Koltun
2018 (arXiv:1803.01271): residual blocks of two dilated causal
convolutions, each weight-normalized (Salimans & Kingma 2016,
arXiv:1602.07868; tensorflow-addons' `WeightNormalization` in keras-tcn),
followed by ReLU and spatial dropout, with a 1x1 convolution on the skip
path where the channel count changes, stacked with dilations 1, 2, 4, 8.
The blocks are custom layers holding their weight-normalized convolutions,
as in keras-tcn, registered for `.keras` saving.

The tests initialize the model from data (`keras_norms.data_dependent_init`,
paper section 3), train it on a small task, save and reload it and export
it (TensorFlow backend).
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_norms import data_dependent_init, fold
from keras_norms.graph import iter_layers
from keras_norms.layers import WeightNormalization

PACKAGE = "keras_norms_tests_tcn"
STEPS = 24  # sequence length; the receptive field, 1 + 2 (3 - 1)(1 + 2 + 4 + 8) = 61, covers it
FILTERS = 16
DILATIONS = (1, 2, 4, 8)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock(keras.layers.Layer):
    """keras-tcn's residual block: two weight-normalized dilated causal convolutions.

    `relu(x + dropout(relu(conv2(dropout(relu(conv1(x)))))))`, the skip path
    through a 1x1 convolution where the input has another channel count than
    `filters`.
    """

    def __init__(self, filters, kernel_size, dilation_rate, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        self.dropout_rate = dropout_rate
        self.convs = [
            WeightNormalization(
                keras.layers.Conv1D(
                    filters,
                    kernel_size,
                    dilation_rate=dilation_rate,
                    padding="causal",
                    kernel_initializer=keras.initializers.RandomNormal(stddev=0.05),
                ),
                name=f"conv1d_{k}",
            )
            for k in range(2)
        ]
        self.dropouts = [keras.layers.SpatialDropout1D(dropout_rate) for _ in range(2)]
        self.shortcut = None

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            self.shortcut = keras.layers.Conv1D(self.filters, 1, name="matching_conv1d")
            self.shortcut.build(input_shape)
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = shape[:-1] + (self.filters,)

    def call(self, inputs, training=None):
        x = inputs
        for conv, dropout in zip(self.convs, self.dropouts):
            x = dropout(ops.relu(conv(x)), training=training)
        skip = inputs if self.shortcut is None else self.shortcut(inputs)
        return ops.relu(x + skip)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "dilation_rate": self.dilation_rate,
            "dropout_rate": self.dropout_rate,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class TCN(keras.layers.Layer):
    """keras-tcn's `TCN` layer: residual blocks with growing dilations.

    With `return_sequences=False` (keras-tcn's default) it returns the last
    time step, `(batch, filters)`.
    """

    def __init__(
        self,
        filters=FILTERS,
        kernel_size=3,
        dilations=DILATIONS,
        dropout_rate=0.0,
        return_sequences=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.dilations = tuple(dilations)
        self.dropout_rate = dropout_rate
        self.return_sequences = return_sequences
        self.blocks = [
            ResidualBlock(filters, kernel_size, d, dropout_rate, name=f"residual_block_{i}")
            for i, d in enumerate(self.dilations)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)

    def call(self, inputs, training=None):
        x = inputs
        for block in self.blocks:
            x = block(x, training=training)
        return x if self.return_sequences else x[:, -1, :]

    def compute_output_shape(self, input_shape):
        if self.return_sequences:
            return tuple(input_shape[:-1]) + (self.filters,)
        return (input_shape[0], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "dilations": list(self.dilations),
            "dropout_rate": self.dropout_rate,
            "return_sequences": self.return_sequences,
        }


def _model(dropout_rate=0.05):
    inputs = keras.Input((STEPS, 1))
    features = TCN(dropout_rate=dropout_rate, name="tcn")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(features))


def _task(num, seed):
    """Sequences of `STEPS` normals; the target is their sum over `sqrt(STEPS)` (variance 1)."""
    x = np.random.default_rng(seed).normal(size=(num, STEPS, 1)).astype("float32")
    return x, (x.sum(axis=1) / np.sqrt(STEPS)).astype("float32")


def _weight_normalized(model):
    return [layer for layer in iter_layers(model) if isinstance(layer, WeightNormalization)]


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x), "float64")


def _initialized_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = _model()
    x_init, _ = _task(256, seed=seed + 100)
    return model, x_init, data_dependent_init(model, x_init)


def test_tcn_data_init_training_and_keras_file(tmp_path):
    model, x_init, initialized = _initialized_model()
    wn_layers = _weight_normalized(model)
    assert len(wn_layers) == 2 * len(DILATIONS)  # found inside the custom layers
    assert {id(layer) for layer in initialized} == {id(layer) for layer in wn_layers}
    assert all(bool(_numpy(layer.initialized)) for layer in wn_layers)

    # Paper section 3: the first convolution's pre-activation (its output: the
    # ReLU is outside it) on the init batch has mean 0 and std 1 per channel.
    first = model.get_layer("tcn").blocks[0].convs[0]
    assert first is wn_layers[0]
    t = _numpy(first(x_init))
    mean, std = t.mean(axis=(0, 1)), t.std(axis=(0, 1))
    assert mean.shape == (FILTERS,)
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(std, 1.0, rtol=1e-3)
    # The initialized g is 1 / std of the unit-direction pre-activation, far from ||v||.
    v = _numpy(first.layer.kernel)
    assert np.all(np.abs(_numpy(first.g) / np.sqrt((v**2).sum(axis=(0, 1))) - 1) > 0.05)
    # A second call changes nothing: every layer is initialized already.
    assert data_dependent_init(model, x_init) == []

    x, y = _task(512, seed=1)
    x_val, y_val = _task(256, seed=2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    before = model.evaluate(x_val, y_val, verbose=0)
    history = model.fit(x, y, batch_size=64, epochs=6, verbose=0)
    after = model.evaluate(x_val, y_val, verbose=0)
    losses = history.history["loss"]
    print(f"TCN validation MSE {before:.4f} -> {after:.4f}; training {losses}")
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert after < 0.5 * before

    path = str(tmp_path / "tcn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # the classes are registered: no custom_objects
    tcn = loaded.get_layer("tcn")
    assert type(tcn) is TCN and all(type(b) is ResidualBlock for b in tcn.blocks)
    assert tcn.blocks[0].shortcut is not None and tcn.blocks[1].shortcut is None
    expected = model.predict(x_val, verbose=0)
    np.testing.assert_allclose(loaded.predict(x_val, verbose=0), expected, rtol=0, atol=1e-6)
    # The saved `initialized` flags keep a reloaded model from being initialized again.
    loaded_wn = _weight_normalized(loaded)
    assert len(loaded_wn) == len(wn_layers)
    assert data_dependent_init(loaded, x_init) == []


def test_tcn_exports_with_parity(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"export needs the TensorFlow backend; backend is {keras.backend.backend()}")
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from keras_norms.export import exporter

    model, _, _ = _initialized_model(seed=3)
    x, _ = _task(32, seed=4)
    expected = _numpy(model.predict(x, verbose=0))
    assert expected.std() > 0.1
    report = exporter.export_and_check(model, str(tmp_path), x)
    print(
        "TCN export max |diff|: SavedModel "
        f"{report['saved_model_max_abs_diff']:.3e}, TFLite {report['tflite_max_abs_diff']:.3e}"
    )
    assert report["saved_model_max_abs_diff"] <= 1e-4
    assert report["tflite_max_abs_diff"] <= 1e-4
    np.testing.assert_allclose(exporter.run_tflite(report["tflite"], x), expected, atol=1e-4)


def test_fold_reaches_weight_norm_inside_custom_layers():
    """fold copies the custom layers whole and folds their weight-normalized convs in place."""
    model, x_init, _ = _initialized_model(seed=5)
    folded = fold(model)
    expected = _numpy(model(x_init, training=False))
    np.testing.assert_allclose(_numpy(folded(x_init, training=False)), expected, atol=1e-5)
    inner = _weight_normalized(folded)
    assert len(inner) == 8
    for layer in inner:  # folded: the kernels hold g v/||v||, g no longer matters
        layer.g.assign(np.full(layer.g.shape, 123.0, "float32"))
    np.testing.assert_allclose(_numpy(folded(x_init, training=False)), expected, atol=1e-5)
    # The original model is untouched.
    np.testing.assert_allclose(_numpy(model(x_init, training=False)), expected)
