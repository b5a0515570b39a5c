"""`load_torch_state_dict`: a PyTorch model's weights in the same Keras model give its outputs."""

import warnings

import keras
import numpy as np
import pytest

from keras_norms.interop import load_torch_state_dict
from keras_norms.layers import LearnedStatisticsNormalization, WeightNormalization
from tests.layer_test_helper import numpy

torch = pytest.importorskip("torch")
LENGTH = 9


class _TorchNet(torch.nn.Module):
    """Both weight-norm formats, a ConvTranspose normalized per input channel, a grouped conv."""

    def __init__(self):
        super().__init__()
        parametrized = torch.nn.utils.parametrizations.weight_norm
        self.pre = parametrized(torch.nn.Conv1d(4, 6, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.nn.utils.weight_norm is deprecated
            self.up = torch.nn.utils.weight_norm(torch.nn.ConvTranspose1d(6, 4, 4, stride=2))
        self.norm = torch.nn.BatchNorm1d(4)  # a 1-D weight: not a kernel
        self.post = torch.nn.Conv1d(4, 2, 3, groups=2)
        self.head = parametrized(torch.nn.Linear(2, 3))

    def forward(self, x):
        h = torch.nn.functional.leaky_relu(self.pre(x), 0.1)
        h = self.norm(torch.nn.functional.leaky_relu(self.up(h), 0.1))
        return self.head(self.post(h).transpose(1, 2))


def _keras_net(up_axis="output"):
    inputs = keras.Input((LENGTH, 4))
    h = WeightNormalization(keras.layers.Conv1D(6, 3), name="pre")(inputs)
    h = keras.layers.LeakyReLU(0.1)(h)
    up = keras.layers.Conv1DTranspose(4, 4, strides=2)
    h = WeightNormalization(up, axis=up_axis, data_init=False, name="up")(h)
    h = keras.layers.LeakyReLU(0.1)(h)
    h = keras.layers.Conv1D(2, 3, groups=2, name="post")(h)
    return keras.Model(inputs, WeightNormalization(keras.layers.Dense(3), name="head")(h))


@pytest.mark.parametrize("up_axis", ["output", -1])
def test_torch_weights_give_the_torch_outputs(up_axis):
    """`up`: torch's per-input-channel norm, loaded as its weight or, with axis=-1, as g and v."""
    torch.manual_seed(0)
    net = _TorchNet().eval()
    with torch.no_grad():  # g away from ||v||, so that g and v both matter
        for module in (net.pre, net.head):
            module.parametrizations.weight.original0.mul_(1.7)
        net.up.weight_g.mul_(0.6)
        net.norm.running_var.fill_(1.0 - net.norm.eps)  # the identity at inference
    x = np.random.default_rng(0).normal(size=(5, 4, LENGTH)).astype("float32")
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    model = _keras_net(up_axis)
    loaded = load_torch_state_dict(model, net.state_dict())  # BatchNorm's entries are ignored
    assert [(name, layer.name) for name, layer in loaded] == [
        ("pre", "pre"),
        ("up", "up"),
        ("post", "post"),
        ("head", "head"),
    ]
    actual = numpy(model(np.moveaxis(x, 1, -1)))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    # A per-output-feature torch norm keeps its g (and v) in Keras.
    torch_g = net.pre.parametrizations.weight.original0.detach().numpy().reshape(-1)
    np.testing.assert_allclose(numpy(model.get_layer("pre").g), torch_g, rtol=1e-6)
    up_g = numpy(model.get_layer("up").g)
    if up_axis == -1:  # the same norm as torch's: its g, one per input channel
        np.testing.assert_allclose(up_g, net.up.weight_g.detach().numpy().reshape(-1), rtol=1e-6)
    else:  # ||w|| per output feature of the weight torch computes
        w = np.transpose(numpy(net.up.weight), (2, 1, 0))
        np.testing.assert_allclose(up_g, np.linalg.norm(w, axis=(0, 2)), rtol=1e-5)


def test_mismatched_models_are_value_errors_naming_both_sides():
    net = _TorchNet()
    model = _keras_net()
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("head.")}
    with pytest.raises(ValueError, match=r"3 modules with weights \(pre, up, post\).*4 linear"):
        load_torch_state_dict(model, state)
    wrong = dict(net.state_dict())
    wrong["post.weight"] = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match=r"'post' of shape \(2, 4, 3\) does not fit post"):
        load_torch_state_dict(model, wrong)


def test_a_weight_normalization_without_scale_cannot_hold_a_torch_weight():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, WeightNormalization(keras.layers.Dense(2), use_scale=False)(inputs))
    state = torch.nn.Linear(3, 2).state_dict()
    kernel = numpy(model.layers[1].layer.kernel)
    with pytest.raises(ValueError, match=r"use_scale=False, which computes v / \|\|v\|\|"):
        load_torch_state_dict(model, state)
    np.testing.assert_array_equal(numpy(model.layers[1].layer.kernel), kernel)  # untouched


def test_layers_inside_our_normalizations_are_not_torch_targets():
    """Learned statistics' Conv1D networks are its own, not the user's linear layers."""
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    h = LearnedStatisticsNormalization()(h)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(h)))
    rng = np.random.default_rng(1)
    state = {
        "conv.weight": rng.normal(size=(3, 2, 3, 3)),
        "conv.bias": rng.normal(size=3),
        "fc.weight": rng.normal(size=(2, 48)),
        "fc.bias": rng.normal(size=2),
    }
    loaded = load_torch_state_dict(model, state)
    assert [(name, layer.name) for name, layer in loaded] == [("conv", "conv"), ("fc", "fc")]
    np.testing.assert_allclose(numpy(model.get_layer("fc").kernel), state["fc.weight"].T, 1e-6)


def test_by_name_pairs_modules_and_layers_whatever_their_order():
    net = _TorchNet()
    model = _keras_net()
    reversed_state = dict(reversed(list(net.state_dict().items())))
    loaded = load_torch_state_dict(model, reversed_state, by_name=True)
    assert sorted(name for name, _ in loaded) == ["head", "post", "pre", "up"]
    assert all(name == layer.name for name, layer in loaded)
    renamed = {k.replace("post.", "tail."): v for k, v in net.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"without a Keras layer.*\['tail'\].*torch module: \['post'\]"
    ):
        load_torch_state_dict(model, renamed, by_name=True)
