"""tensorflow-addons' WeightNormalization tests, ported to keras_norms' API.

The cases (layer types, shapes and numbers) come from
`tensorflow_addons/layers/tests/wrappers_test.py` in tensorflow/addons
(last revision d208d752, April 2024) and, in the second table, from earlier
revisions of the same file (`tensorflow_addons/layers/wrappers_test.py`)
whose cases the final one dropped. The tests are written anew for our API;
where tfa only ran code without an error, ours also check numbers (g against
`||v||`, outputs against the unwrapped layer, a numpy reference or the
paper's init statistics).

Intended API differences from tfa's `WeightNormalization`:

* Data-dependent init is not done by the first call, as in tfa, but
  explicitly, once for a whole model, by
  `keras_norms.data_dependent_init(model, x_init)`; until then `g = ||v||`
  (so the layer computes what the wrapped layer computed).
* It refuses a degenerate init batch (fewer than 2 values per output
  feature, or a constant pre-activation) with a ValueError; tfa silently set
  `g = 1/sqrt(0 + 1e-10) = 1e5`, as it does in its own `test_removal`.
* A layer inside `TimeDistributed` (called once per frame) is initialized
  from the statistics of all frames; tfa took the first call's. A layer
  shared in the model (called twice) is refused (ValueError).
* Recurrent layers (SimpleRNN, LSTM, GRU, `keras.layers.RNN` of their cells):
  `data_init` defaults to False and `data_init=True` raises ValueError (tfa
  only logged a warning, and set the recurrent kernel's g from the statistics
  of the layer's output, tiled over the gates).
  Their kernel and recurrent kernel each get their own g (`wn.scales`); tfa
  normalized the recurrent kernel only.
* A non-layer argument raises TypeError (tfa's test expected ValueError or
  AssertionError); a layer without a kernel raises ValueError when wrapped,
  not when first called.
* `plain_layer()` replaces `remove()`: it returns a new layer of the wrapped
  layer's type holding `g * v / ||v||` (tfa mutated and returned the wrapped
  layer itself).
* Weights are saved in `.keras` and `.weights.h5` files (Keras 3), not `.h5`.

tfa case (final file) -> our test -> difference
-----------------------------------------------

==========================================  ==========================================  =====
tfa                                         here                                        note
==========================================  ==========================================  =====
test_basic (Conv2D(5, 2x2), (2, 4, 4, 3))   test_basic[conv2d-5-2x2]                    [a]
test_no_bias (Dense(5, no bias), (2, 4))    test_no_bias                                [a]
test_with_data_init_is_false                test_with_data_init_is_false                [a]
test_with_data_init_is_true (x/4)           test_with_data_init_is_true                 [b]
test_non_layer                              test_non_layer                              [c]
test_non_kernel_layer (MaxPooling2D)        test_non_kernel_layer                       [c]
test_with_time_dist ((8, 8, 16, 16, 3))     test_with_time_dist                         [d]
test_serialization x4                       test_serialization[Dense|SimpleRNN|...]     [e]
test_model_build x4 x data_init             test_model_build[...-data_init=...]         [f]
test_save_file_h5 x4                        test_save_file[Dense|SimpleRNN|...]         [g]
test_forward_pass x4                        test_forward_pass[Dense|SimpleRNN|...]      --
test_removal x4 x data_init                 test_removal[...-data_init=...]             [h]
==========================================  ==========================================  =====

Cases of earlier revisions of the file
--------------------------------------

==========================================  ==========================================  =====
tfa (revision)                              here                                        note
==========================================  ==========================================  =====
test_weightnorm_dense_train (16ee6c59)      test_trains[dense-data-init]                [i]
test_weightnorm_dense_train_notinit         test_trains[dense-no-data-init]             [i]
test_weightnorm_conv2d (16ee6c59)           test_trains[conv2d-same-relu]               [i]
test_weightnorm_tflayers (16ee6c59)         test_conv2d_32_filters                      --
test_weightnorm_nonlayer / _nokernel        test_non_layer / test_non_kernel_layer      [c]
test_weightnorm_keras (16ee6c59)            test_basic[dense-2-on-3x4]                  [a]
test_weightnorm_with_time_dist (776b7511)   test_with_time_dist (the final shapes)      [d]
test_weightnorm_with_rnn (bf8a8093)         test_with_rnn                               --
test_save_file_h5, Conv1D(1, 1) (7f2e35c3)  test_save_file[Conv1D]                      [g]
==========================================  ==========================================  =====

Notes:

[a] tfa's `layer_test` becomes our `run_layer_test` (config and `.keras`
    round trips, a fit step, mixed precision), with the same layer, input
    shape and expected output.
[b] Same input `[[[-4, -4], [4, 4]]]`, identity kernel, zero bias and the
    same expected output `x / 4` (std over the 2 values per feature is 4,
    so `g = 1/4`), but after `data_dependent_init(model, x)`; before it the
    output is `x`. (tfa took the init statistics of `x . v`, ours those of
    `x . v / ||v||`, the paper's; with the identity kernel `||v|| = 1`.)
[c] TypeError for a non-layer; ValueError at construction for MaxPooling2D.
[d] tfa only built the model; here the output is checked against a numpy
    convolution per frame, and `data_dependent_init` standardizes the
    pre-activation over all frames, which `TimeDistributed` passes one by one.
[e] The wrapped layer's class is checked for LSTM too (tfa skipped it for
    a TF 2.x LSTM class mismatch); tfa's `is_rnn` has no counterpart: we
    check `data_init` (False for RNNs) and the keys of `scales`.
[f] `data_init=True` with SimpleRNN or LSTM raises ValueError (tfa: allowed).
[g] `.keras` and `.weights.h5` round trips with identical outputs; the
    recurrent layers use the default `data_init` (False for them; tfa: True).
[h] tfa's data-init variant initialized from a single example of ones
    (zero variance, `g = 1e5`); we check that `data_dependent_init` refuses
    that batch, initialize from a random batch of the same shape but 8
    examples, and compare outputs on tfa's ones. With SimpleRNN or LSTM,
    `data_init=True` raises ValueError. Tolerance 1e-6 (tfa: rtol 1e-7), as
    `plain_layer` computes its kernel once, outside the layer's graph.
[i] Same layers, data shapes, optimizer (RMSprop, lr 0.001), epochs and
    batch size; tfa's data init ran in the first training step, ours before
    `fit`. After training, each output feature's weights have norm g and the
    model computes `x . w + b` (numpy).

Beyond tfa: the RNN rules above (`test_scales_*`, `test_rnn_*`), the default axis
(`test_axis_defaults_to_output`) and a data-initialized Embedding. The other layer types
WeightNormalization wraps (EinsumDense, Conv1D/3D, Conv2DTranspose, DepthwiseConv1D/2D,
SeparableConv1D/2D, Embedding, GRU, `keras.layers.RNN` of SimpleRNN/LSTM/GRU cells, a user's
layer) have one table, in test_weight_norm_any_layer.py, with numpy references of eq. 2.
"""

import os

import keras
import numpy as np
import pytest

from keras_norms import data_dependent_init
from keras_norms.layers import WeightNormalization
from tests.layer_test_helper import (
    assert_allclose,
    assert_array_equal,
    numpy,
    numpy_conv2d_valid,
    run_layer_test,
)

RECURRENT = (keras.layers.RNN,)  # SimpleRNN, LSTM and GRU are RNN subclasses


def _is_recurrent(layer):
    return isinstance(layer, RECURRENT)


def _wrapped_unless_refused(inner, data_init):
    """`WeightNormalization(inner, data_init)`, or None after checking that it is refused.

    tfa allowed (and warned about) data init for RNNs; we refuse it.
    """
    if _is_recurrent(inner) and data_init:
        with pytest.raises(ValueError, match="data_init"):
            WeightNormalization(inner, data_init=data_init)
        return None
    return WeightNormalization(inner, data_init=data_init)


def _kernel_variable(wn, name):
    """The wrapped layer's variable `name` (`v`); a recurrent layer's are on its cell."""
    layer = wn.layer.cell if _is_recurrent(wn.layer) else wn.layer
    return getattr(layer, name)


_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


def _output_axes(layer, name):
    """Kernel axes of the output features (`axis="output"`), or None where not pinned down.

    Dense, EinsumDense "ab,bc->ac", convolutions and RNN kernels `(..., out)`:
    the last axis; transposed convolutions `(..., out, in)`: the second to
    last; depthwise kernels `(..., in, multiplier)`: one output channel per
    (in, multiplier) pair. Embedding is left out: which of its axes is
    "output" is the implementation's choice.
    """
    if name == "embeddings":
        return None
    if isinstance(layer, _TRANSPOSED):
        return (-2,)
    if name == "depthwise_kernel" or (name == "kernel" and isinstance(layer, _DEPTHWISE)):
        return (-2, -1)
    return (-1,)


def _norms(v, output_axes):
    v = numpy(v, "float64")
    keep = {a % v.ndim for a in output_axes}
    axes = tuple(a for a in range(v.ndim) if a not in keep)
    return np.sqrt(np.sum(v**2, axis=axes))


def _assert_g_is_norm_of_v(wn):
    """Before any data init, each g holds `||v||` per output feature."""
    scales = wn.scales
    assert scales, "no scale variables"
    for name, g in scales.items():
        output_axes = _output_axes(wn.layer, name)
        if output_axes is None:
            continue
        expected = _norms(_kernel_variable(wn, name), output_axes)
        assert_allclose(numpy(g).ravel(), expected.ravel(), rtol=1e-6, err_msg=name)


def _scale_every_g(wn, rng):
    """Multiply each g by factors in [0.4, 0.625] or [1.6, 2.5], so that g matters."""
    for g in wn.scales.values():
        factors = rng.choice([0.5, 2.0], size=g.shape) * rng.uniform(0.8, 1.25, size=g.shape)
        g.assign(numpy(g) * factors.astype("float32"))


# tfa's four layer types and input shapes (without the batch axis).
TFA_CASES = [
    pytest.param(lambda: keras.layers.Dense(1), (1,), id="Dense"),
    pytest.param(lambda: keras.layers.SimpleRNN(1), (10, 10), id="SimpleRNN"),
    pytest.param(lambda: keras.layers.Conv2D(3, 1), (3, 3, 1), id="Conv2D"),
    pytest.param(lambda: keras.layers.LSTM(1), (10, 10), id="LSTM"),
]


# test_basic, test_no_bias, test_weightnorm_keras ------------------------------------------


@pytest.mark.parametrize(
    "make_inner, input_shape, output_shape",
    [
        pytest.param(
            lambda: keras.layers.Conv2D(5, (2, 2)), (4, 4, 3), (3, 3, 5), id="conv2d-5-2x2"
        ),
        pytest.param(lambda: keras.layers.Dense(2), (3, 4), (3, 2), id="dense-2-on-3x4"),
    ],
)
def test_basic(make_inner, input_shape, output_shape, tmp_path):
    # Trainable: v (the kernel), bias and g; non-trainable: the `initialized` flag.
    run_layer_test(
        lambda: WeightNormalization(make_inner()), input_shape, output_shape, 3, 1, str(tmp_path)
    )


def test_no_bias(tmp_path):
    run_layer_test(
        lambda: WeightNormalization(keras.layers.Dense(5, use_bias=False)),
        (4,),
        (5,),
        2,
        1,
        str(tmp_path),
    )


# test_with_data_init_is_false / _is_true --------------------------------------------------

# One example of 2 positions x 2 features: per feature the values are -4 and 4.
TFA_INIT_INPUT = np.array([[[-4, -4], [4, 4]]], dtype="float32")


def _identity_dense(data_init):
    return WeightNormalization(
        keras.layers.Dense(2, kernel_initializer="identity", bias_initializer="zeros"),
        data_init=data_init,
    )


def test_with_data_init_is_false(tmp_path):
    run_layer_test(
        lambda: _identity_dense(False),
        (2, 2),
        (2, 2),
        3,
        1,
        str(tmp_path),
        input_data=TFA_INIT_INPUT,
        expected_output=TFA_INIT_INPUT,
    )
    wn = _identity_dense(False)
    model = keras.Sequential([keras.Input((2, 2)), wn])
    assert data_dependent_init(model, TFA_INIT_INPUT) == []
    assert_allclose(wn.g, [1.0, 1.0], rtol=1e-7)
    assert_allclose(model(TFA_INIT_INPUT), TFA_INIT_INPUT, rtol=1e-6, atol=1e-6)


def test_with_data_init_is_true(tmp_path):
    """tfa: x/4 from the first call. Here: x until data_dependent_init, x/4 after it."""
    wn = _identity_dense(True)
    model = keras.Sequential([keras.Input((2, 2)), wn])
    assert_allclose(model(TFA_INIT_INPUT), TFA_INIT_INPUT, rtol=1e-6, atol=1e-6)
    assert data_dependent_init(model, TFA_INIT_INPUT) == [wn]
    # mean 0 and std 4 per feature: g = 1/sqrt(16 + 1e-10) = 1/4, b = 0.
    assert_allclose(wn.g, [0.25, 0.25], rtol=1e-6)
    assert_allclose(wn.layer.bias, [0.0, 0.0], atol=1e-7)
    expected = TFA_INIT_INPUT / 4
    assert_allclose(model(TFA_INIT_INPUT), expected, rtol=1e-6, atol=1e-6)
    # Initialized once: a second init, or a reloaded model, changes nothing.
    assert data_dependent_init(model, 2 * TFA_INIT_INPUT) == []
    path = os.path.join(str(tmp_path), "init.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert data_dependent_init(reloaded, 2 * TFA_INIT_INPUT) == []
    assert_allclose(reloaded(TFA_INIT_INPUT), expected, rtol=1e-6, atol=1e-6)


# test_non_layer, test_non_kernel_layer ----------------------------------------------------


def test_non_layer():
    images = keras.random.uniform((2, 4, 3))
    with pytest.raises(TypeError, match="Keras layer"):
        WeightNormalization(images)


def test_non_kernel_layer():
    # tfa raised when the wrapper was first called; we raise when wrapping.
    with pytest.raises(ValueError, match="kernel"):
        WeightNormalization(keras.layers.MaxPooling2D(2, 2))


# test_with_time_dist ----------------------------------------------------------------------


def test_with_time_dist():
    batch_shape = (8, 8, 16, 16, 3)
    inputs = keras.Input(batch_shape=batch_shape)
    wn = WeightNormalization(keras.layers.Conv2D(3, 3), name="wn_conv")
    model = keras.Model(inputs, keras.layers.TimeDistributed(wn)(inputs))
    assert tuple(model.output.shape) == (8, 8, 14, 14, 3)
    _assert_g_is_norm_of_v(wn)
    x = np.random.default_rng(0).normal(size=batch_shape).astype("float32")
    frames = x.reshape((-1,) + batch_shape[2:]).astype("float64")
    expected = numpy_conv2d_valid(frames, numpy(wn.layer.kernel, "float64"))
    expected = (expected + numpy(wn.layer.bias)).reshape(8, 8, 14, 14, 3)
    assert_allclose(model(x), expected, rtol=1e-4, atol=1e-4)
    # tfa initialized from the first call (one frame's statistics); TimeDistributed
    # calls the layer per frame, and data_dependent_init pools over all frames.
    assert data_dependent_init(model, x) == [wn]
    t = numpy(model(x), "float64").reshape(-1, 3)
    assert_allclose(t.mean(axis=0), 0.0, atol=1e-4)
    assert_allclose(t.std(axis=0), 1.0, rtol=1e-4)


# test_serialization -----------------------------------------------------------------------


@pytest.mark.parametrize("make_inner, input_shape", TFA_CASES)
def test_serialization(make_inner, input_shape):
    inner = make_inner()
    rnn = _is_recurrent(inner)
    wn = WeightNormalization(inner, data_init=not rnn)
    revived = keras.layers.deserialize(keras.layers.serialize(wn))
    assert type(revived) is WeightNormalization
    assert revived.data_init == wn.data_init == (not rnn)
    assert type(revived.layer) is type(inner)
    assert _is_recurrent(revived.layer) == rnn
    assert revived.get_config() == wn.get_config()
    x = np.random.default_rng(1).normal(size=(2,) + input_shape).astype("float32")
    wn(x)
    revived(x)
    assert set(revived.scales) == set(wn.scales)
    revived.set_weights(wn.get_weights())
    assert_allclose(revived(x), wn(x), rtol=1e-6, atol=1e-6)


# test_model_build -------------------------------------------------------------------------


@pytest.mark.parametrize("data_init", [True, False], ids=["data_init=True", "data_init=False"])
@pytest.mark.parametrize(
    "make_inner, input_shape, data_shape",
    [
        pytest.param(lambda: keras.layers.Dense(1), (1,), (2, 1), id="Dense"),
        pytest.param(lambda: keras.layers.SimpleRNN(1), (None, 10), (2, 7, 10), id="SimpleRNN"),
        pytest.param(lambda: keras.layers.Conv2D(3, 1), (3, 3, 1), (2, 3, 3, 1), id="Conv2D"),
        pytest.param(lambda: keras.layers.LSTM(1), (10, 10), (2, 10, 10), id="LSTM"),
    ],
)
def test_model_build(make_inner, input_shape, data_shape, data_init):
    inner = make_inner()
    wn = _wrapped_unless_refused(inner, data_init)
    if wn is None:
        return
    model = keras.Sequential([keras.Input(shape=input_shape), wn])
    model.build()
    assert wn.built and inner.built
    _assert_g_is_norm_of_v(wn)
    x = np.random.default_rng(2).normal(size=data_shape).astype("float32")
    plain = keras.Sequential([keras.Input(shape=input_shape), wn.plain_layer()])
    y = model(x)
    assert tuple(y.shape) == tuple(plain(x).shape)
    assert_allclose(y, plain(x), rtol=1e-6, atol=1e-6)


# test_save_file_h5 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_inner, input_shape",
    TFA_CASES + [pytest.param(lambda: keras.layers.Conv1D(1, 1), (2, 3), id="Conv1D")],
)
def test_save_file(make_inner, input_shape, tmp_path):
    """tfa only wrote an .h5 weights file; we reload .keras and .weights.h5 files."""

    def make_model():
        # Default data_init: True for Dense and Conv, False for the recurrent layers.
        model = keras.Sequential([WeightNormalization(make_inner())])
        model.build((None,) + input_shape)
        return model

    model = make_model()
    wn = model.layers[0]
    assert wn.data_init == (not _is_recurrent(wn.layer))
    rng = np.random.default_rng(3)
    _scale_every_g(wn, rng)  # a g that a rebuilt layer would not recompute from v
    x = rng.normal(size=(2,) + input_shape).astype("float32")
    expected = numpy(model(x))
    path = os.path.join(str(tmp_path), "wrapper_test_model.keras")
    model.save(path)
    assert_array_equal(keras.saving.load_model(path)(x), expected)
    weights_path = os.path.join(str(tmp_path), "wrapper_test_model.weights.h5")
    model.save_weights(weights_path)
    fresh = make_model()
    assert not np.allclose(numpy(fresh(x)), expected)
    fresh.load_weights(weights_path)
    assert_array_equal(fresh(x), expected)


# test_forward_pass ------------------------------------------------------------------------


@pytest.mark.parametrize("make_inner, input_shape", TFA_CASES)
def test_forward_pass(make_inner, input_shape):
    sample_data = np.ones((1,) + input_shape, dtype="float32")
    inner = make_inner()
    base_output = numpy(inner(sample_data))
    wn = WeightNormalization(inner, data_init=False)
    assert_allclose(wn(sample_data), base_output, rtol=1e-6, atol=1e-6)
    _assert_g_is_norm_of_v(wn)


# test_removal -----------------------------------------------------------------------------


@pytest.mark.parametrize("data_init", [True, False], ids=["data_init=True", "data_init=False"])
@pytest.mark.parametrize("make_inner, input_shape", TFA_CASES)
def test_removal(make_inner, input_shape, data_init):
    sample_data = np.ones((1,) + input_shape, dtype="float32")
    inner = make_inner()
    wn = _wrapped_unless_refused(inner, data_init)
    if wn is None:
        return
    model = keras.Sequential([keras.Input(shape=input_shape), wn])
    if data_init:
        # tfa's init batch (one example of ones) has zero variance: tfa set g = 1e5.
        with pytest.raises(ValueError, match="data_dependent_init"):
            data_dependent_init(model, sample_data)
        _assert_g_is_norm_of_v(wn)  # nothing was written
        x_init = np.random.default_rng(4).normal(size=(8,) + input_shape).astype("float32")
        assert data_dependent_init(model, x_init) == [wn]
        assert not np.allclose(numpy(wn.g), _norms(wn.layer.kernel, (-1,)))
    wn_output = numpy(wn(sample_data))
    removed = wn.plain_layer()
    assert type(removed) is type(inner)
    assert_allclose(removed(sample_data), wn_output, rtol=1e-6, atol=1e-6)


# Earlier revisions: test_weightnorm_dense_train(_notinit), test_weightnorm_conv2d ----------


@pytest.mark.parametrize(
    "make_inner, data_init, x_shape, y_shape, activation",
    [
        pytest.param(
            lambda: keras.layers.Dense(2), True, (10, 3, 4), (10, 3, 2), None, id="dense-data-init"
        ),
        pytest.param(
            lambda: keras.layers.Dense(2),
            False,
            (10, 3, 4),
            (10, 3, 2),
            None,
            id="dense-no-data-init",
        ),
        pytest.param(
            lambda: keras.layers.Conv2D(5, (2, 2), padding="same"),
            True,
            (2, 4, 4, 3),
            (2, 4, 4, 5),
            "relu",
            id="conv2d-same-relu",
        ),
    ],
)
def test_trains(make_inner, data_init, x_shape, y_shape, activation):
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    x = rng.random(x_shape).astype("float32")
    y = rng.random(y_shape).astype("float32")
    wn = WeightNormalization(make_inner(), data_init=data_init)
    layers = [keras.Input(x_shape[1:]), wn]
    if activation:
        layers.append(keras.layers.Activation(activation))
    model = keras.Sequential(layers)
    if data_init:
        assert data_dependent_init(model, x) == [wn]
        t = numpy(wn(x), "float64")
        axes = tuple(range(t.ndim - 1))
        assert_allclose(t.mean(axis=axes), 0.0, atol=1e-5)
        assert_allclose(t.std(axis=axes), 1.0, rtol=1e-4)
    else:
        _assert_g_is_norm_of_v(wn)
    g_before = numpy(wn.g)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=0.001), loss="mse")
    history = model.fit(x, y, epochs=3, batch_size=10, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    g = numpy(wn.g, "float64")
    assert not np.allclose(g, g_before)
    w = numpy(wn.kernel, "float64")
    assert_allclose(np.sqrt(np.sum(w**2, axis=tuple(range(w.ndim - 1)))), g, rtol=1e-5)
    if isinstance(wn.layer, keras.layers.Dense):
        expected = x.astype("float64") @ w + numpy(wn.layer.bias)
        assert_allclose(wn(x), expected, rtol=1e-5, atol=1e-5)


# Earlier revision: test_weightnorm_tflayers -----------------------------------------------


def test_conv2d_32_filters():
    images = keras.random.uniform((2, 4, 4, 3), seed=6)
    wn = WeightNormalization(keras.layers.Conv2D(32, [2, 2]))
    y = wn(images)
    assert tuple(wn.g.shape) == (32,)
    _assert_g_is_norm_of_v(wn)
    expected = numpy_conv2d_valid(numpy(images, "float64"), numpy(wn.kernel, "float64"))
    assert_allclose(y, expected + numpy(wn.layer.bias), rtol=1e-5, atol=1e-5)


# Earlier revision: test_weightnorm_with_rnn -----------------------------------------------


def test_with_rnn():
    x = np.random.default_rng(7).normal(size=(3, 6, 3)).astype("float32")
    rnn = keras.layers.SimpleRNN(4)
    base_output = numpy(rnn(x))
    dense = keras.layers.Dense(1)
    model = keras.Sequential([keras.Input(shape=(None, 3)), WeightNormalization(rnn), dense])
    assert model.built and tuple(model.outputs[0].shape) == (None, 1)
    y = model(x)
    assert tuple(y.shape) == (3, 1)
    assert_allclose(y, dense(base_output), rtol=1e-5, atol=1e-6)


# Beyond tfa: more layer types, scales, RNN rules, axis -------------------------------------


def test_beyond_tfa_data_init_with_an_embedding_in_the_model():
    """A weight-normalized Embedding is data-initialized by default, like a Dense.

    Each embedding feature gets std 1 over the looked-up init batch (it has
    no bias to center it).
    """
    x = np.random.default_rng(12).integers(0, 10, size=(16, 6)).astype("int32")
    wn = WeightNormalization(keras.layers.Embedding(10, 4))
    model = keras.Sequential([keras.Input(shape=(6,), dtype="int32"), wn])
    assert wn.data_init is True
    assert data_dependent_init(model, x) == [wn]
    assert_allclose(numpy(model(x), "float64").std(axis=(0, 1)), 1.0, rtol=1e-4)


@pytest.mark.parametrize(
    "make_inner, input_shape, names",
    [
        pytest.param(lambda: keras.layers.Dense(3), (4,), {"kernel"}, id="Dense"),
        pytest.param(lambda: keras.layers.Conv2D(3, 1), (3, 3, 1), {"kernel"}, id="Conv2D"),
        pytest.param(
            lambda: keras.layers.SimpleRNN(2),
            (5, 3),
            {"kernel", "recurrent_kernel"},
            id="SimpleRNN",
        ),
        pytest.param(
            lambda: keras.layers.LSTM(2), (5, 3), {"kernel", "recurrent_kernel"}, id="LSTM"
        ),
        pytest.param(lambda: keras.layers.GRU(2), (5, 3), {"kernel", "recurrent_kernel"}, id="GRU"),
    ],
)
def test_scales_maps_each_kernel_name_to_its_g(make_inner, input_shape, names):
    inner = make_inner()
    wn = WeightNormalization(inner)
    wn(np.ones((1,) + input_shape, "float32"))
    assert set(wn.scales) == names
    assert all(g.trainable for g in wn.scales.values())
    if names == {"kernel"}:
        assert wn.g is wn.scales["kernel"]
    else:
        # LSTM: 4 gates, GRU: 3, SimpleRNN: 1, of 2 units each; one g per fused column.
        for name in names:
            assert tuple(wn.scales[name].shape) == (_kernel_variable(wn, name).shape[-1],)
    _assert_g_is_norm_of_v(wn)


@pytest.mark.parametrize(
    "make_inner",
    [
        pytest.param(lambda: keras.layers.SimpleRNN(1), id="SimpleRNN"),
        pytest.param(lambda: keras.layers.LSTM(1), id="LSTM"),
        pytest.param(lambda: keras.layers.GRU(1), id="GRU"),
        pytest.param(lambda: keras.layers.RNN(keras.layers.LSTMCell(1)), id="RNN-LSTMCell"),
    ],
)
def test_rnn_data_init_defaults_to_false_and_true_is_refused(make_inner):
    assert WeightNormalization(make_inner()).data_init is False
    with pytest.raises(ValueError, match="data_init"):
        WeightNormalization(make_inner(), data_init=True)


def test_axis_defaults_to_output():
    wn = WeightNormalization(keras.layers.Dense(3))
    assert wn.get_config()["axis"] == "output"
    assert WeightNormalization.from_config(wn.get_config()).get_config()["axis"] == "output"
