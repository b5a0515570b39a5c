"""PyTorch's weight normalization as an oracle: same outputs and gradients of g, v and bias.

`torch.nn.utils.parametrizations.weight_norm(module, dim=...)` on the torch layer
that matches each Keras layer (kernel layouts transposed, channels first in
torch), with the same g, v and bias. Gradients on the Keras side come from one
`train_on_batch` step of plain SGD with learning rate 1 on the loss
`mean_n sum(output * r)`: each variable moves by minus its gradient, on any
backend. Runs wherever torch is installed (.ci/run installs it), on the JAX
and PyTorch backends: under TensorFlow, in a process that had exported a
SavedModel and TFLite file before, the Keras step after torch's backward pass
was seen to give a wrong gradient of v in about 1 run in 7 (never without
torch in the process), so the TensorFlow backend is left to the numpy-reference
tests of test_weight_norm.py.
"""

import keras
import numpy as np
import pytest

from keras_norms.layers import WeightNormalization
from tests.layer_test_helper import numpy

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() == "tensorflow",
    reason="TensorFlow and torch in one process: see the module docstring",
)

BATCH = 4


def _channels_first(x):
    return np.moveaxis(x, -1, 1)


def _channels_last(x):
    return np.moveaxis(x, 1, -1)


# name: (Keras layer, torch layer, input shape (channels last), torch dim,
#        Keras kernel -> torch weight layout permutation)
CASES = {
    "dense": (
        lambda: keras.layers.Dense(5),
        lambda: torch.nn.Linear(3, 5),
        (3,),
        0,
        (1, 0),
    ),
    "conv1d_dilated": (
        lambda: keras.layers.Conv1D(4, 3, dilation_rate=2),
        lambda: torch.nn.Conv1d(3, 4, 3, dilation=2),
        (11, 3),
        0,
        (2, 1, 0),
    ),
    "conv2d_strided": (
        lambda: keras.layers.Conv2D(4, (3, 2), strides=2),
        lambda: torch.nn.Conv2d(3, 4, (3, 2), stride=2),
        (9, 8, 3),
        0,
        (3, 2, 0, 1),
    ),
    "conv2d_grouped_same": (
        lambda: keras.layers.Conv2D(4, 3, padding="same", groups=2),
        lambda: torch.nn.Conv2d(4, 4, 3, padding=1, groups=2),
        (6, 6, 4),
        0,
        (3, 2, 0, 1),
    ),
    "conv3d": (
        lambda: keras.layers.Conv3D(2, 2),
        lambda: torch.nn.Conv3d(3, 2, 2),
        (4, 5, 4, 3),
        0,
        (4, 3, 0, 1, 2),
    ),
    # torch keeps a transposed convolution's weight as (in, out, k...): our
    # per-output-feature norm is torch's dim=1.
    "conv1d_transpose": (
        lambda: keras.layers.Conv1DTranspose(4, 3, strides=2),
        lambda: torch.nn.ConvTranspose1d(3, 4, 3, stride=2),
        (6, 3),
        1,
        (2, 1, 0),
    ),
    "conv2d_transpose": (
        lambda: keras.layers.Conv2DTranspose(2, 3, strides=2),
        lambda: torch.nn.ConvTranspose2d(3, 2, 3, stride=2),
        (4, 5, 3),
        1,
        (3, 2, 0, 1),
    ),
}


def _inverse(permutation):
    return tuple(np.argsort(permutation))


def _torch_oracle(make_torch, dim, v, g, bias, x, r):
    """Outputs (channels last) and the gradients of g, v and bias of torch's weight norm."""
    module = make_torch().double()
    module = torch.nn.utils.parametrizations.weight_norm(module, dim=dim)
    original = module.parametrizations.weight
    g_shape = tuple(original.original0.shape)
    with torch.no_grad():
        original.original0.copy_(torch.from_numpy(g.reshape(g_shape)))
        original.original1.copy_(torch.from_numpy(v))
        module.bias.copy_(torch.from_numpy(bias))
    channels_first = x.ndim > 2
    inputs = torch.from_numpy(_channels_first(x) if channels_first else x)
    outputs = module(inputs)
    target = torch.from_numpy(_channels_first(r) if channels_first else r)
    (torch.sum(outputs * target) / len(x)).backward()
    out = outputs.detach().numpy()
    return (
        _channels_last(out) if channels_first else out,
        original.original0.grad.numpy().reshape(-1),
        original.original1.grad.numpy(),
        module.bias.grad.numpy(),
    )


def _product_loss(y_true, y_pred):
    """Per example `sum(y_pred * y_true)`; Keras averages it over the batch."""
    return keras.ops.sum(y_pred * y_true, axis=tuple(range(1, len(y_pred.shape))))


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_and_gradients_match_torch_weight_norm(case):
    make_keras, make_torch, input_shape, dim, to_torch = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    wn = WeightNormalization(make_keras(), data_init=False)
    model = keras.Sequential([keras.Input(input_shape), wn])
    kernel_shape = tuple(wn.layer.kernel.shape)
    v = rng.normal(size=kernel_shape)
    g = rng.uniform(0.5, 2.0, size=tuple(wn.g.shape))
    bias = rng.normal(size=tuple(wn.layer.bias.shape))
    wn.layer.kernel.assign(v)
    wn.g.assign(g)
    wn.layer.bias.assign(bias)
    x = rng.normal(size=(BATCH,) + input_shape)
    r = rng.normal(size=tuple(model.output_shape[1:]))[None].repeat(BATCH, axis=0)
    r = r * rng.uniform(0.5, 1.5, size=(BATCH,) + (1,) * (r.ndim - 1))

    out, g_grad, v_grad, bias_grad = _torch_oracle(
        make_torch, dim, np.transpose(v, to_torch), g, bias, x, r
    )
    np.testing.assert_allclose(numpy(model(x.astype("float32"))), out, rtol=1e-5, atol=1e-5)

    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss=_product_loss)
    model.train_on_batch(x.astype("float32"), r.astype("float32"))
    # SGD with learning rate 1: each variable moved by minus its gradient.
    np.testing.assert_allclose(g - numpy(wn.g, "float64"), g_grad, rtol=1e-4, atol=2e-5)
    v_step = v - numpy(wn.layer.kernel, "float64")
    np.testing.assert_allclose(v_step, np.transpose(v_grad, _inverse(to_torch)), atol=2e-5)
    np.testing.assert_allclose(bias - numpy(wn.layer.bias, "float64"), bias_grad, atol=2e-5)
