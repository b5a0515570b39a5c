"""PyTorch's weight normalization as an oracle: same outputs and gradients of g, v and bias.

`torch.nn.utils.parametrizations.weight_norm(module, name, dim)` on each weight
of the torch layer that matches each Keras layer (kernel layouts transposed,
channels first in torch), with the same g, v and bias: dense, convolutions
(dilated, strided, grouped, 3D, transposed), depthwise and separable
convolutions (torch: grouped convolutions), embeddings, SimpleRNN and LSTM
(each kernel with its own g) and an LSTM cell inside `keras.layers.RNN`; and
torch's `dim` against our `axis` (`None`, per input channel of a transposed
convolution, per kernel position as wav2vec2's `dim=2`, per token).
Gradients on the Keras side come from one `train_on_batch` step of plain SGD
with learning rate 1 on the loss `mean_n sum(output * r)`: each variable moves
by minus its gradient, on any backend. Runs wherever torch is installed
(.ci/run installs it). On TensorFlow the step is compiled, as `fit`'s is; it
caught the stale gradients that `keras_norms.tensorflow_workaround` avoids.
"""

import keras
import numpy as np
import pytest

from keras_norms.layers import WeightNormalization
from tests.layer_test_helper import numpy

torch = pytest.importorskip("torch")

BATCH = 4


def _channels_first(x):
    return np.moveaxis(x, -1, 1)


def _channels_last(x):
    return np.moveaxis(x, 1, -1)


def _permutation(*axes):
    """Keras kernel -> torch weight by transposition, and back (given the Keras shape)."""
    return (lambda k: np.transpose(k, axes)), (lambda w, _: np.transpose(w, np.argsort(axes)))


def _depthwise(rank):
    """Keras `(*k, in, multiplier)` <-> torch grouped `(in * multiplier, 1, *k)`."""
    spatial = tuple(range(rank))

    def to_torch(kernel):
        *k, channels, multiplier = kernel.shape
        moved = np.transpose(kernel, (rank, rank + 1) + spatial)
        return moved.reshape((channels * multiplier, 1, *k))

    def from_torch(weight, shape):
        *k, channels, multiplier = shape
        moved = weight.reshape((channels, multiplier, *k))
        return np.transpose(moved, tuple(range(2, rank + 2)) + (0, 1))

    return to_torch, from_torch


DENSE = _permutation(1, 0)
CONV1D = _permutation(2, 1, 0)
CONV2D = _permutation(3, 2, 0, 1)


class Case:
    """A Keras layer and its torch twin.

    `kernels` lists, for each Keras kernel variable name, the torch parameter
    path, torch's `dim` and the layouts `(to_torch, from_torch)`; `biases`
    maps Keras bias names to torch parameter paths (an RNN's input bias;
    its recurrent bias stays zero).
    """

    def __init__(self, make_keras, make_torch, input_shape, kernels, biases, **options):
        self.make_keras = make_keras
        self.make_torch = make_torch
        self.input_shape = input_shape
        self.kernels = kernels
        self.biases = biases
        self.axis = options.get("axis", "output")
        self.channels_first = options.get("channels_first", len(input_shape) > 1)
        self.vocabulary = options.get("vocabulary")  # integer inputs below it
        self.in_rnn = options.get("in_rnn", False)  # a cell, wrapped, inside keras.layers.RNN


def _rnn(keras_cls, torch_cls):
    return Case(
        lambda: keras_cls(4, return_sequences=True),
        lambda: torch_cls(3, 4, batch_first=True),
        (5, 3),
        {
            "kernel": ("weight_ih_l0", 0, DENSE),
            "recurrent_kernel": ("weight_hh_l0", 0, DENSE),
        },
        {"bias": "bias_ih_l0"},
        channels_first=False,
    )


CASES = {
    "dense": Case(
        lambda: keras.layers.Dense(5),
        lambda: torch.nn.Linear(3, 5),
        (3,),
        {"kernel": ("weight", 0, DENSE)},
        {"bias": "bias"},
    ),
    "dense_whole_tensor": Case(
        lambda: keras.layers.Dense(5),
        lambda: torch.nn.Linear(3, 5),
        (3,),
        {"kernel": ("weight", None, DENSE)},
        {"bias": "bias"},
        axis=None,
    ),
    "conv1d_dilated": Case(
        lambda: keras.layers.Conv1D(4, 3, dilation_rate=2),
        lambda: torch.nn.Conv1d(3, 4, 3, dilation=2),
        (11, 3),
        {"kernel": ("weight", 0, CONV1D)},
        {"bias": "bias"},
    ),
    # wav2vec2's positional convolution: torch's dim=2, one g per kernel position.
    "conv1d_grouped_per_position": Case(
        lambda: keras.layers.Conv1D(4, 5, padding="same", groups=2),
        lambda: torch.nn.Conv1d(4, 4, 5, padding=2, groups=2),
        (9, 4),
        {"kernel": ("weight", 2, CONV1D)},
        {"bias": "bias"},
        axis=0,
    ),
    "conv2d_strided": Case(
        lambda: keras.layers.Conv2D(4, (3, 2), strides=2),
        lambda: torch.nn.Conv2d(3, 4, (3, 2), stride=2),
        (9, 8, 3),
        {"kernel": ("weight", 0, CONV2D)},
        {"bias": "bias"},
    ),
    "conv2d_grouped_same": Case(
        lambda: keras.layers.Conv2D(4, 3, padding="same", groups=2),
        lambda: torch.nn.Conv2d(4, 4, 3, padding=1, groups=2),
        (6, 6, 4),
        {"kernel": ("weight", 0, CONV2D)},
        {"bias": "bias"},
    ),
    "conv3d": Case(
        lambda: keras.layers.Conv3D(2, 2),
        lambda: torch.nn.Conv3d(3, 2, 2),
        (4, 5, 4, 3),
        {"kernel": ("weight", 0, _permutation(4, 3, 0, 1, 2))},
        {"bias": "bias"},
    ),
    # torch keeps a transposed convolution's weight as (in, out, k...): our
    # per-output-feature norm is torch's dim=1; torch's default dim=0 (per
    # input channel, HiFi-GAN's upsampling) is our axis=-1.
    "conv1d_transpose": Case(
        lambda: keras.layers.Conv1DTranspose(4, 3, strides=2),
        lambda: torch.nn.ConvTranspose1d(3, 4, 3, stride=2),
        (6, 3),
        {"kernel": ("weight", 1, CONV1D)},
        {"bias": "bias"},
    ),
    "conv1d_transpose_per_input_channel": Case(
        lambda: keras.layers.Conv1DTranspose(4, 3, strides=2),
        lambda: torch.nn.ConvTranspose1d(3, 4, 3, stride=2),
        (6, 3),
        {"kernel": ("weight", 0, CONV1D)},
        {"bias": "bias"},
        axis=-1,
    ),
    "conv2d_transpose": Case(
        lambda: keras.layers.Conv2DTranspose(2, 3, strides=2),
        lambda: torch.nn.ConvTranspose2d(3, 2, 3, stride=2),
        (4, 5, 3),
        {"kernel": ("weight", 1, CONV2D)},
        {"bias": "bias"},
    ),
    "depthwise_conv2d": Case(
        lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
        lambda: torch.nn.Conv2d(3, 6, 3, groups=3),
        (6, 5, 3),
        {"kernel": ("weight", 0, _depthwise(2))},
        {"bias": "bias"},
    ),
    "depthwise_conv1d": Case(
        lambda: keras.layers.DepthwiseConv1D(3, padding="same"),
        lambda: torch.nn.Conv1d(4, 4, 3, padding=1, groups=4),
        (7, 4),
        {"kernel": ("weight", 0, _depthwise(1))},
        {"bias": "bias"},
    ),
    "separable_conv1d": Case(
        lambda: keras.layers.SeparableConv1D(5, 3, depth_multiplier=2),
        lambda: torch.nn.Sequential(
            torch.nn.Conv1d(3, 6, 3, groups=3, bias=False), torch.nn.Conv1d(6, 5, 1)
        ),
        (8, 3),
        {
            "depthwise_kernel": ("0.weight", 0, _depthwise(1)),
            "pointwise_kernel": ("1.weight", 0, CONV1D),
        },
        {"bias": "1.bias"},
    ),
    "embedding": Case(
        lambda: keras.layers.Embedding(10, 4),
        lambda: torch.nn.Embedding(10, 4),
        (6,),
        {"embeddings": ("weight", 1, _permutation(0, 1))},
        {},
        vocabulary=10,
        channels_first=False,
    ),
    # torch's default on an Embedding: one g per token.
    "embedding_per_token": Case(
        lambda: keras.layers.Embedding(10, 4),
        lambda: torch.nn.Embedding(10, 4),
        (6,),
        {"embeddings": ("weight", 0, _permutation(0, 1))},
        {},
        axis=0,
        vocabulary=10,
        channels_first=False,
    ),
    "simple_rnn": _rnn(keras.layers.SimpleRNN, torch.nn.RNN),
    "lstm": _rnn(keras.layers.LSTM, torch.nn.LSTM),
    "lstm_cell_in_rnn": Case(
        lambda: keras.layers.LSTMCell(4),
        lambda: torch.nn.LSTM(3, 4, batch_first=True),
        (5, 3),
        {
            "kernel": ("weight_ih_l0", 0, DENSE),
            "recurrent_kernel": ("weight_hh_l0", 0, DENSE),
        },
        {"bias": "bias_ih_l0"},
        channels_first=False,
        in_rnn=True,
    ),
}


def _torch_module(module, path):
    owner, _, name = path.rpartition(".")
    return (module.get_submodule(owner) if owner else module), name


def _torch_oracle(case, values, x, r):
    """Outputs and the gradients of each g, v and bias under torch's weight norm.

    `values` maps Keras variable names to numpy values in the Keras layout:
    each kernel's v and its g (under `name + "/g"`) and each bias.
    """
    module = case.make_torch().double()
    for name, (path, dim, (to_torch, _)) in case.kernels.items():
        owner, attribute = _torch_module(module, path)
        torch.nn.utils.parametrizations.weight_norm(owner, name=attribute, dim=dim)
        original = owner.parametrizations[attribute]
        with torch.no_grad():
            g = values[name + "/g"].reshape(tuple(original.original0.shape))
            original.original0.copy_(torch.from_numpy(g))
            original.original1.copy_(torch.from_numpy(to_torch(values[name])))
    for name, path in case.biases.items():
        with torch.no_grad():
            owner, attribute = _torch_module(module, path)
            getattr(owner, attribute).copy_(torch.from_numpy(values[name]))
    for parameter_name, parameter in module.named_parameters():
        if parameter_name.startswith("bias_hh"):  # Keras RNNs have one bias
            with torch.no_grad():
                parameter.zero_()
    if case.vocabulary:
        inputs = torch.from_numpy(x.astype("int64"))
    else:
        inputs = torch.from_numpy(_channels_first(x) if case.channels_first else x)
    outputs = module(inputs)
    outputs = outputs[0] if isinstance(outputs, tuple) else outputs
    target = torch.from_numpy(_channels_first(r) if case.channels_first else r)
    (torch.sum(outputs * target) / len(x)).backward()
    out = outputs.detach().numpy()
    grads = {"output": _channels_last(out) if case.channels_first else out}
    for name, (path, _, (_, from_torch)) in case.kernels.items():
        owner, attribute = _torch_module(module, path)
        original = owner.parametrizations[attribute]
        grads[name + "/g"] = original.original0.grad.numpy().reshape(-1)
        v_grad = original.original1.grad.numpy()
        grads[name] = from_torch(v_grad, values[name].shape)
    for name, path in case.biases.items():
        owner, attribute = _torch_module(module, path)
        grads[name] = getattr(owner, attribute).grad.numpy()
    return grads


def _product_loss(y_true, y_pred):
    """Per example `sum(y_pred * y_true)`; Keras averages it over the batch."""
    return keras.ops.sum(y_pred * y_true, axis=tuple(range(1, len(y_pred.shape))))


def _keras_model(case):
    wn = WeightNormalization(case.make_keras(), data_init=False, axis=case.axis)
    dtype = "int32" if case.vocabulary else "float32"
    inputs = keras.Input(case.input_shape, dtype=dtype)
    if case.in_rnn:
        outputs = keras.layers.RNN(wn, return_sequences=True)(inputs)
    else:
        outputs = wn(inputs)
    return keras.Model(inputs, outputs), wn


def _randomize(wn, case, rng):
    """Random v, g and biases, set in Keras; returns them by name, float64."""
    variables = {v.name: v for v in wn.layer.weights}
    values = {}
    for name in case.kernels:
        values[name] = rng.normal(size=tuple(variables[name].shape))
        values[name + "/g"] = rng.uniform(0.5, 2.0, size=tuple(wn.scales[name].shape))
        variables[name].assign(values[name])
        wn.scales[name].assign(values[name + "/g"])
    for name in case.biases:
        values[name] = rng.normal(size=tuple(variables[name].shape))
        variables[name].assign(values[name])
    return values


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_forward_and_gradients_match_torch_weight_norm(case_name):
    case = CASES[case_name]
    rng = np.random.default_rng(sorted(CASES).index(case_name))
    model, wn = _keras_model(case)
    values = _randomize(wn, case, rng)
    if case.vocabulary:
        x = rng.integers(0, case.vocabulary, size=(BATCH,) + case.input_shape)
    else:
        x = rng.normal(size=(BATCH,) + case.input_shape)
    r = rng.normal(size=tuple(model.output_shape[1:]))[None].repeat(BATCH, axis=0)
    r = r * rng.uniform(0.5, 1.5, size=(BATCH,) + (1,) * (r.ndim - 1))
    expected = _torch_oracle(case, values, x, r)

    x = x.astype("int32" if case.vocabulary else "float32")
    np.testing.assert_allclose(numpy(model(x)), expected["output"], rtol=1e-5, atol=1e-5)

    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0),
        loss=_product_loss,
    )
    model.train_on_batch(x, r.astype("float32"))
    # SGD with learning rate 1: each variable moved by minus its gradient.
    variables = {v.name: v for v in wn.layer.weights}
    for name in case.kernels:
        g_step = values[name + "/g"] - numpy(wn.scales[name], "float64")
        np.testing.assert_allclose(g_step.reshape(-1), expected[name + "/g"], rtol=1e-4, atol=2e-5)
        v_step = values[name] - numpy(variables[name], "float64")
        np.testing.assert_allclose(v_step, expected[name], rtol=1e-4, atol=2e-5)
    for name in case.biases:
        bias_step = values[name] - numpy(variables[name], "float64")
        np.testing.assert_allclose(bias_step, expected[name], rtol=1e-4, atol=2e-5)
