"""WeightNormalization on any layer with a kernel: numpy references of eq. 2, init, deployment.

Each case wraps a Keras layer type and is checked against Keras' own layer of
the same config holding the kernels computed in numpy from Salimans & Kingma
2016 (arXiv:1602.07868) eq. 2, `w = g v / ||v||` with the norm over every axis
but the output features (written out per case below, independently of
`keras_norms.layers.kernels`). PyTorch's `weight_norm` is the second oracle
(test_weight_norm_torch_oracle.py).
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_norms
from keras_norms.layers import WeightNormalization
from tests.layer_test_helper import assert_allclose, numpy


@keras.saving.register_keras_serializable(package="tests")
class ScaledLinear(keras.layers.Layer):
    """A user layer with its own names: `y = x . w * 2 + offset`."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1], self.units))
        self.offset = self.add_weight(name="offset", shape=(self.units,), initializer="ones")

    def call(self, x):
        return ops.matmul(x, self.w) * 2.0 + self.offset

    def get_config(self):
        return {**super().get_config(), "units": self.units}


L = keras.layers
# name: (make the layer, wrapper kwargs, input shape without batch,
#        {kernel name: the kernel axes that keep their own g})
CASES = {
    "einsum_dense": (
        lambda: L.EinsumDense("abc,cde->abde", output_shape=(None, 3, 2), bias_axes="de"),
        {},
        (4, 5),
        {"kernel": (1, 2)},
    ),
    "einsum_dense_transposed_output": (
        lambda: L.EinsumDense("abc,cd->adb", output_shape=(3, 4), bias_axes="d"),
        {},
        (4, 5),
        {"kernel": (1,)},
    ),
    "einsum_dense_matrix": (
        lambda: L.EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c"),
        {},
        (5,),
        {"kernel": (1,)},
    ),
    "conv1d": (lambda: L.Conv1D(3, 2), {}, (6, 2), {"kernel": (2,)}),
    "conv3d": (lambda: L.Conv3D(2, 2), {}, (3, 3, 3, 2), {"kernel": (4,)}),
    "conv2d_transpose": (
        lambda: L.Conv2DTranspose(2, 3, strides=2),
        {},
        (4, 4, 3),
        {"kernel": (2,)},  # (height, width, filters, input channels)
    ),
    "depthwise_conv1d": (
        lambda: L.DepthwiseConv1D(3, depth_multiplier=2),
        {},
        (6, 3),
        {"kernel": (1, 2)},
    ),
    "depthwise_conv2d": (
        lambda: L.DepthwiseConv2D(3, depth_multiplier=2, activation="relu"),
        {},
        (6, 6, 3),
        {"kernel": (2, 3)},
    ),
    "depthwise_conv1d_channels_first": (
        lambda: L.DepthwiseConv1D(3, data_format="channels_first"),
        {},
        (3, 8),
        {"kernel": (1, 2)},
    ),
    "separable_conv2d": (
        lambda: L.SeparableConv2D(4, 3, depth_multiplier=2, padding="same"),
        {},
        (5, 5, 3),
        {"depthwise_kernel": (2, 3), "pointwise_kernel": (3,)},
    ),
    "separable_conv1d": (
        lambda: L.SeparableConv1D(4, 3, dilation_rate=2),
        {},
        (9, 3),
        {"depthwise_kernel": (1, 2), "pointwise_kernel": (2,)},
    ),
    "embedding": (lambda: L.Embedding(12, 4), {}, (5,), {"embeddings": (1,)}),
    "gru": (
        lambda: L.GRU(4, return_sequences=True),
        {},
        (5, 3),
        {"kernel": (1,), "recurrent_kernel": (1,)},
    ),
    "rnn_simple_rnn_cell": (
        lambda: L.RNN(L.SimpleRNNCell(2)),
        {},
        (5, 3),
        {"kernel": (1,), "recurrent_kernel": (1,)},
    ),
    "rnn_lstm_cell": (
        lambda: L.RNN(L.LSTMCell(2)),
        {},
        (5, 3),
        {"kernel": (1,), "recurrent_kernel": (1,)},
    ),
    "rnn_gru_cell": (
        lambda: L.RNN(L.GRUCell(2)),
        {},
        (5, 3),
        {"kernel": (1,), "recurrent_kernel": (1,)},
    ),
    "simple_rnn_whole_tensor": (
        lambda: L.SimpleRNN(4),
        {"axis": None},
        (5, 3),
        {"kernel": (), "recurrent_kernel": ()},
    ),
    "conv2d_per_input_channel": (
        lambda: L.Conv2D(4, 3),
        {"axis": -2},
        (6, 6, 3),
        {"kernel": (2,)},
    ),
    "user_layer": (
        lambda: ScaledLinear(3),
        {"kernel_names": ["w"]},
        (5,),
        {"w": (1,)},
    ),
}


def _inputs(name, rng, batch=6):
    shape = (batch,) + CASES[name][2]
    if name.startswith("embedding"):
        return rng.integers(0, 12, size=shape).astype("int32")
    return rng.normal(size=shape).astype("float32")


def _numpy_kernel(v, g, kept):
    """Eq. 2 in numpy: `g v / ||v||`, the norm over every axis not in `kept`."""
    v = np.asarray(v, "float64")
    norm_axes = tuple(a for a in range(v.ndim) if a not in kept)
    g_shape = [v.shape[a] if a in kept else 1 for a in range(v.ndim)]
    norm = np.sqrt(np.sum(v**2, axis=norm_axes, keepdims=True))
    return np.reshape(g, g_shape) * v / norm


def _built(name, rng, **overrides):
    make, kwargs, _, _ = CASES[name]
    wn = WeightNormalization(make(), **{**kwargs, **overrides})
    x = _inputs(name, rng)
    wn(x)
    return wn, x


def _randomize(wn, rng):
    for variable in wn.layer.weights:
        variable.assign(rng.normal(scale=2.0, size=variable.shape))
    for g in wn.scales.values():
        g.assign(rng.uniform(0.5, 2.0, size=g.shape))


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_equals_the_plain_layer_with_numpy_kernels(name):
    rng = np.random.default_rng(sorted(CASES).index(name))
    wn, x = _built(name, rng)
    _randomize(wn, rng)
    plain = CASES[name][0]()
    plain(x)
    kept = CASES[name][3]
    values = {v.name: numpy(v) for v in wn.layer.weights}
    for kernel_name, axes in kept.items():
        values[kernel_name] = _numpy_kernel(
            values[kernel_name], numpy(wn.scales[kernel_name]), axes
        )
    plain.set_weights([values[v.name].astype("float32") for v in plain.weights])
    assert_allclose(wn(x), plain(x), rtol=1e-5, atol=1e-5)
    assert sorted(wn.scales) == sorted(kept)


@pytest.mark.parametrize("name", sorted(CASES))
def test_wrapping_leaves_the_output_unchanged_and_plain_layer_keeps_it(name):
    rng = np.random.default_rng(10 + sorted(CASES).index(name))
    make, kwargs, _, _ = CASES[name]
    layer = make()
    x = _inputs(name, rng)
    before = numpy(layer(x))
    wn = WeightNormalization(layer, data_init=False, **kwargs)
    assert_allclose(wn(x), before, rtol=1e-5, atol=1e-5)
    _randomize(wn, rng)
    plain = wn.plain_layer()
    assert type(plain) is type(layer)
    assert_allclose(plain(x), wn(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_save_and_reload_in_a_model(name, tmp_path):
    rng = np.random.default_rng(20 + sorted(CASES).index(name))
    make, kwargs, input_shape, _ = CASES[name]
    dtype = "int32" if name.startswith("embedding") else "float32"
    inputs = keras.Input(input_shape, dtype=dtype)
    model = keras.Model(inputs, WeightNormalization(make(), data_init=False, **kwargs)(inputs))
    _randomize(model.layers[1], rng)
    x = _inputs(name, rng)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert_allclose(reloaded(x), model(x), rtol=1e-6, atol=1e-6)
    assert reloaded.layers[1].get_config()["axis"] == model.layers[1].get_config()["axis"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_fit_step_moves_every_g_and_v(name):
    rng = np.random.default_rng(30 + sorted(CASES).index(name))
    keras.utils.set_random_seed(30 + sorted(CASES).index(name))
    make, kwargs, _, _ = CASES[name]
    wn = WeightNormalization(make(), data_init=False, **kwargs)
    model = keras.Sequential([wn])  # built lazily, by fit
    x = _inputs(name, rng, batch=8)
    y = rng.normal(size=numpy(model(x)).shape).astype("float32")
    before = {v.path: numpy(v) for v in model.trainable_variables}
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for variable in model.trainable_variables:
        after = numpy(variable)
        assert np.all(np.isfinite(after)), variable.path
        # A variable the gradient does not reach stays bit for bit; one it
        # reaches can move by little (a whole-tensor g moved by 2.6e-6 once).
        assert not np.array_equal(after, before[variable.path]), variable.path


FEED_FORWARD = [
    name
    for name in sorted(CASES)
    if "rnn" not in name and name != "gru" and "axis" not in CASES[name][1]
]


@pytest.mark.parametrize("name", FEED_FORWARD)
def test_data_init_standardizes_the_pre_activation(name):
    """Paper section 3: after init, `t = x . w + b` has mean 0 and std 1 per output feature."""
    rng = np.random.default_rng(40 + sorted(CASES).index(name))
    make, kwargs, input_shape, _ = CASES[name]
    layer = make()
    if hasattr(layer, "activation"):
        layer.activation = keras.activations.get(None)
    dtype = "int32" if name.startswith("embedding") else "float32"
    inputs = keras.Input(input_shape, dtype=dtype)
    wn = WeightNormalization(layer, **kwargs)
    model = keras.Model(inputs, wn(inputs))
    x = _inputs(name, rng, batch=64)
    assert keras_norms.data_dependent_init(model, x) == [wn]
    t = numpy(model(x), "float64")
    if name == "user_layer":  # y = 2 x . w + offset, whose offset is not a `bias`
        t = t - numpy(layer.offset)
    features = {
        "einsum_dense": (2, 3),
        "einsum_dense_transposed_output": (1,),
        "depthwise_conv1d_channels_first": (1,),
    }.get(name, (t.ndim - 1,))
    axes = tuple(a for a in range(t.ndim) if a not in features)
    assert_allclose(np.std(t, axis=axes), 1.0, rtol=1e-3)
    if name not in ("user_layer", "embedding"):  # they have no `bias` to center with
        assert_allclose(np.mean(t, axis=axes), 0.0, atol=1e-4)


@pytest.mark.parametrize(
    "make_layer",
    [lambda: L.LSTM(3), lambda: L.GRUCell(3), lambda: L.Dense(3)],
    ids=["lstm", "gru_cell", "dense_whole_tensor"],
)
def test_data_init_where_it_is_not_defined_is_refused(make_layer):
    axis = None if isinstance(make_layer(), L.Dense) else "output"
    assert WeightNormalization(make_layer(), axis=axis).data_init is False
    with pytest.raises(ValueError, match="data_init=False.*Received: layer="):
        WeightNormalization(make_layer(), axis=axis, data_init=True)


def test_data_dependent_init_skips_recurrent_layers_and_initializes_the_rest():
    rng = np.random.default_rng(50)
    lstm = WeightNormalization(L.LSTM(4, return_sequences=True))
    dense = WeightNormalization(L.Dense(2))
    model = keras.Sequential([keras.Input((5, 3)), lstm, dense])
    g_before = numpy(lstm.g)
    assert keras_norms.data_dependent_init(model, rng.normal(size=(16, 5, 3))) == [dense]
    assert_allclose(lstm.g, g_before)


def test_rnn_dropout_draws_new_masks_at_each_call():
    """The wrapped layer's seed generator advances: its state updates pass the wrapper."""
    wn = WeightNormalization(L.LSTM(4, dropout=0.5))
    # 4 x 16 mask entries: two draws agree with probability 2^-64 (with 2 x 3, 1/64: it did).
    x = np.ones((4, 5, 16), "float32")
    first, second = numpy(wn(x, training=True)), numpy(wn(x, training=True))
    assert not np.allclose(first, second)
    assert_allclose(wn(x, training=False), wn(x, training=False))


def test_a_cell_with_dropout_is_refused():
    with pytest.raises(ValueError, match="wrap the RNN layer.*Received: layer="):
        WeightNormalization(L.LSTMCell(4, dropout=0.2))


def test_a_layer_with_two_kernels_of_one_name_is_refused():
    class TwoDense(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.a, self.b = L.Dense(2), L.Dense(2)

        def build(self, input_shape):
            self.a.build(input_shape)
            self.b.build(input_shape)

        def call(self, x):
            return self.a(x) + self.b(x)

    wn = WeightNormalization(TwoDense(), kernel_names=["kernel"])
    with pytest.raises(ValueError, match="several variables named 'kernel'.*Received"):
        wn(np.ones((1, 3), "float32"))


@pytest.mark.parametrize("axis", [5, (0, -7)])
def test_an_axis_out_of_range_is_refused(axis):
    wn = WeightNormalization(L.Dense(2), axis=axis, data_init=False)
    with pytest.raises(ValueError, match="axis out of range.*Received: axis="):
        wn(np.ones((1, 3), "float32"))


@pytest.mark.parametrize("axis", ["input", 1.0, True, [0, "a"]])
def test_an_axis_of_the_wrong_type_is_refused(axis):
    with pytest.raises(TypeError, match="axis.*Received: axis="):
        WeightNormalization(L.Dense(2), axis=axis, data_init=False)


def test_bidirectional_rnn_of_weight_normalized_cells():
    """`Bidirectional(RNN(WeightNormalization(cell)))`: each direction has its own g."""
    rng = np.random.default_rng(60)
    x = rng.normal(size=(3, 5, 2)).astype("float32")
    wrapped = L.Bidirectional(L.RNN(WeightNormalization(L.LSTMCell(4)), return_sequences=True))
    wrapped(x)
    cells = [wrapped.forward_layer.cell, wrapped.backward_layer.cell]
    assert cells[0] is not cells[1]
    for cell in cells:
        _randomize(cell, rng)
    plain = L.Bidirectional(L.RNN(L.LSTMCell(4), return_sequences=True))
    plain(x)
    for wn, rnn in zip(cells, [plain.forward_layer, plain.backward_layer]):
        values = {v.name: numpy(v) for v in wn.layer.weights}
        values.update({name: numpy(wn.effective_kernel(name)) for name in wn.scales})
        rnn.set_weights([values[v.name] for v in rnn.weights])
    assert_allclose(wrapped(x), plain(x), rtol=1e-5, atol=1e-5)
