"""A real client: the HiFi-GAN V1 generator (Kong et al. 2020, arXiv:2010.05646).

HiFi-GAN puts weight normalization (Salimans & Kingma 2016, arXiv:1602.07868)
on every convolution of its generator. The generator is written twice here,
from the paper's V1 configuration and the authors' reference code
(jik876/hifi-gan), with a narrower width (`upsample_initial_channel` 32
instead of 512) to stay fast:

- in PyTorch, with `torch.nn.utils.weight_norm` on every convolution (the
  checkpoints' `weight_g` / `weight_v` format; on the transposed
  convolutions torch's default `dim=0` normalizes per input channel);
- in Keras 3 (functional, channels last), with `WeightNormalization`
  wrapping `Conv1D` / `Conv1DTranspose`.

The torch generator's random weights are loaded into the Keras one with
`keras_norms.interop.load_torch_state_dict` and both must give the same
waveform. Two more tests fold the Keras generator (`keras_norms.fold`, any
backend) and export it (SavedModel and TFLite, TensorFlow backend), checking
the folded model and the files against it.

Torch runs forward passes only (`torch.no_grad()`), and in the parity test
only: TensorFlow gradients after torch in one process were seen to be
flaky (tests/layers/test_weight_norm_torch_oracle.py).
"""

import contextlib
import warnings

import keras
import numpy as np
import pytest

from keras_norms import fold
from keras_norms.graph import iter_layers
from keras_norms.layers import WeightNormalization

MELS = 80
UPSAMPLE_INITIAL_CHANNEL = 32  # 512 in V1
UPSAMPLE_RATES = (8, 8, 2, 2)
UPSAMPLE_KERNEL_SIZES = (16, 16, 4, 4)
RESBLOCK_KERNEL_SIZES = (3, 7, 11)
RESBLOCK_DILATIONS = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
LRELU_SLOPE = 0.1
HOP = int(np.prod(UPSAMPLE_RATES))  # 256 waveform samples per mel frame
FRAMES = 8
# Convolutions: conv_pre, 4 upsamplers, 4 x 3 resblocks x 6, conv_post.
NUM_CONV1D = 1 + len(UPSAMPLE_RATES) * len(RESBLOCK_KERNEL_SIZES) * 6 + 1
NUM_CONV1D_TRANSPOSE = len(UPSAMPLE_RATES)


def _get_padding(kernel_size, dilation=1):
    return (kernel_size * dilation - dilation) // 2


def _torch_generator():
    """The reference code's `Generator` and `ResBlock1` (config V1, narrower), in torch."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    functional = torch.nn.functional

    def weight_norm(module):
        with _ignoring_deprecation():  # torch.nn.utils.weight_norm, as the reference code
            return torch.nn.utils.weight_norm(module)

    class ResBlock1(nn.Module):
        def __init__(self, channels, kernel_size, dilation):
            super().__init__()
            self.convs1 = nn.ModuleList(
                weight_norm(
                    nn.Conv1d(
                        channels,
                        channels,
                        kernel_size,
                        1,
                        dilation=d,
                        padding=_get_padding(kernel_size, d),
                    )
                )
                for d in dilation
            )
            self.convs2 = nn.ModuleList(
                weight_norm(
                    nn.Conv1d(channels, channels, kernel_size, 1, padding=_get_padding(kernel_size))
                )
                for _ in dilation
            )

        def forward(self, x):
            for c1, c2 in zip(self.convs1, self.convs2):
                xt = c1(functional.leaky_relu(x, LRELU_SLOPE))
                xt = c2(functional.leaky_relu(xt, LRELU_SLOPE))
                x = xt + x
            return x

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_kernels = len(RESBLOCK_KERNEL_SIZES)
            self.num_upsamples = len(UPSAMPLE_RATES)
            channels = UPSAMPLE_INITIAL_CHANNEL
            self.conv_pre = weight_norm(nn.Conv1d(MELS, channels, 7, 1, padding=3))
            self.ups = nn.ModuleList(
                weight_norm(
                    nn.ConvTranspose1d(
                        channels // (2**i), channels // (2 ** (i + 1)), k, u, padding=(k - u) // 2
                    )
                )
                for i, (u, k) in enumerate(zip(UPSAMPLE_RATES, UPSAMPLE_KERNEL_SIZES))
            )
            self.resblocks = nn.ModuleList()
            for i in range(len(self.ups)):
                ch = channels // (2 ** (i + 1))
                for k, d in zip(RESBLOCK_KERNEL_SIZES, RESBLOCK_DILATIONS):
                    self.resblocks.append(ResBlock1(ch, k, d))
            self.conv_post = weight_norm(nn.Conv1d(ch, 1, 7, 1, padding=3))

        def forward(self, x):
            x = self.conv_pre(x)
            for i in range(self.num_upsamples):
                x = self.ups[i](functional.leaky_relu(x, LRELU_SLOPE))
                xs = None
                for j in range(self.num_kernels):
                    y = self.resblocks[i * self.num_kernels + j](x)
                    xs = y if xs is None else xs + y
                x = xs / self.num_kernels
            x = functional.leaky_relu(x)  # torch's default slope, 0.01, as the reference code
            return torch.tanh(self.conv_post(x))

    return torch, Generator


@contextlib.contextmanager
def _ignoring_deprecation():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _wn(layer, name):
    return WeightNormalization(layer, name=name)


def _keras_resblock1(x, channels, kernel_size, dilation, prefix):
    for j, d in enumerate(dilation):
        xt = keras.layers.LeakyReLU(LRELU_SLOPE)(x)
        xt = _wn(
            keras.layers.Conv1D(channels, kernel_size, dilation_rate=d, padding="same"),
            f"{prefix}_convs1_{j}",
        )(xt)
        xt = keras.layers.LeakyReLU(LRELU_SLOPE)(xt)
        xt = _wn(
            keras.layers.Conv1D(channels, kernel_size, padding="same"), f"{prefix}_convs2_{j}"
        )(xt)
        x = keras.layers.Add()([xt, x])
    return x


def keras_generator(frames=None):
    """The same generator in Keras 3, channels last: `(N, frames, 80)` to `(N, 256 frames, 1)`.

    Each layer is named after its torch module (dots as underscores). Torch's
    `ConvTranspose1d(padding=(k - u) // 2)` drops `(k - u) // 2` samples at
    each end of the full transposed convolution: here a `'valid'`
    `Conv1DTranspose` (length `(T - 1) u + k`) and a `Cropping1D`, giving
    `u T` samples.
    """
    inputs = keras.Input((frames, MELS))
    channels = UPSAMPLE_INITIAL_CHANNEL
    x = _wn(keras.layers.Conv1D(channels, 7, padding="same"), "conv_pre")(inputs)
    for i, (u, k) in enumerate(zip(UPSAMPLE_RATES, UPSAMPLE_KERNEL_SIZES)):
        ch = channels // (2 ** (i + 1))
        x = keras.layers.LeakyReLU(LRELU_SLOPE)(x)
        x = _wn(keras.layers.Conv1DTranspose(ch, k, strides=u, padding="valid"), f"ups_{i}")(x)
        x = keras.layers.Cropping1D(((k - u) // 2, (k - u) // 2))(x)
        branches = [
            _keras_resblock1(x, ch, kernel, dilation, f"resblocks_{i * 3 + j}")
            for j, (kernel, dilation) in enumerate(zip(RESBLOCK_KERNEL_SIZES, RESBLOCK_DILATIONS))
        ]
        x = keras.layers.Average()(branches)
    x = keras.layers.LeakyReLU(0.01)(x)
    x = _wn(keras.layers.Conv1D(1, 7, padding="same"), "conv_post")(x)
    return keras.Model(inputs, keras.layers.Activation("tanh")(x), name="hifigan_v1_generator")


def _weight_normalized(model):
    return [layer for layer in iter_layers(model) if isinstance(layer, WeightNormalization)]


def _random_g(rng, shape, layer):
    """Norms `g` away from `||v||`, so that outputs depend on both g and v.

    About 0.6 per output channel of a convolution (each shrinks its input a
    little, the residual sums grow it). Each output of an upsampler of
    stride `u` sees `1 / u` of its taps: `g` about `sqrt(u)` per input
    channel (torch's `dim=0`) or `sqrt(2 u)` per output channel (Keras; half
    as many), which keeps the scale. A waveform of standard deviation about
    0.2, mostly away from tanh's saturation.
    """
    name = type(layer).__name__
    if name == "ConvTranspose1d":
        scale = np.sqrt(layer.stride[0])
    elif name == "Conv1DTranspose":
        scale = np.sqrt(2 * layer.strides[0])
    else:
        scale = 0.6
    return (scale * rng.uniform(0.7, 1.3, size=shape)).astype("float32")


def _outputs(model, x):
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), "float64")


def test_torch_hifigan_weights_give_the_torch_waveform():
    from keras_norms.interop import load_torch_state_dict

    torch, Generator = _torch_generator()
    torch.manual_seed(0)
    generator = Generator().eval()
    names = [name for name, module in generator.named_modules() if hasattr(module, "weight_g")]
    assert len(names) == NUM_CONV1D + NUM_CONV1D_TRANSPOSE
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for module in generator.modules():
            if hasattr(module, "weight_g"):
                g = _random_g(rng, module.weight_g.shape, module)
                module.weight_g.copy_(torch.from_numpy(g))
    mel = rng.normal(size=(1, MELS, FRAMES)).astype("float32")
    with torch.no_grad():
        expected = generator(torch.from_numpy(mel)).numpy().astype("float64")
    assert expected.shape == (1, 1, FRAMES * HOP)
    expected = np.moveaxis(expected, 1, -1)
    # Not a near-constant waveform, nor one saturated at +-1: parity means something.
    assert expected.std() > 0.1 and np.abs(expected).max() < 0.99

    model = keras_generator()
    mel_keras = np.moveaxis(mel, 1, -1)
    unloaded = _outputs(model, mel_keras)
    assert unloaded.shape == (1, FRAMES * HOP, 1)
    assert np.max(np.abs(unloaded - expected)) > 1e-2

    state_dict = generator.state_dict()
    # The torch order, by position, does not fit (an upsampler meets a resblock conv):
    # a functional graph lists its layers by depth. By name, it does.
    with pytest.raises(ValueError, match=r"'ups\.1' of shape \(16, 8, 16\) does not fit"):
        load_torch_state_dict(model, state_dict)
    loaded = load_torch_state_dict(model, state_dict, by_name=True)
    assert len(loaded) == NUM_CONV1D + NUM_CONV1D_TRANSPOSE
    assert all(torch_name.replace(".", "_") == layer.name for torch_name, layer in loaded)

    actual = _outputs(model, mel_keras)
    max_diff = float(np.max(np.abs(actual - expected)))
    print(f"HiFi-GAN torch vs Keras waveform max |diff| = {max_diff:.3e}")
    assert max_diff <= 1e-4
    # Any length of mel spectrogram: 256 samples per frame.
    short = mel_keras[:, :3]
    with torch.no_grad():
        short_expected = generator(torch.from_numpy(np.moveaxis(short, -1, 1))).numpy()
    np.testing.assert_allclose(
        _outputs(model, short), np.moveaxis(short_expected, 1, -1), rtol=0, atol=1e-4
    )


def _random_keras_generator(seed, frames=FRAMES):
    """The Keras generator with random weights, g away from ||v||, so that folding matters."""
    keras.utils.set_random_seed(seed)
    model = keras_generator(frames)
    rng = np.random.default_rng(seed)
    for layer in _weight_normalized(model):
        layer.g.assign(_random_g(rng, layer.g.shape, layer.layer))
        layer.layer.bias.assign(rng.normal(scale=0.1, size=layer.layer.bias.shape))
    mel = rng.normal(size=(2, frames, MELS)).astype("float32")
    return model, mel


def test_hifigan_folds_to_plain_convolutions():
    model, mel = _random_keras_generator(seed=1)
    expected = _outputs(model, mel)
    assert expected.shape == (2, FRAMES * HOP, 1) and expected.std() > 0.1
    folded = fold(model)
    assert not _weight_normalized(folded)
    kinds = [type(layer) for layer in iter_layers(folded)]
    assert kinds.count(keras.layers.Conv1D) == NUM_CONV1D
    assert kinds.count(keras.layers.Conv1DTranspose) == NUM_CONV1D_TRANSPOSE
    np.testing.assert_allclose(_outputs(folded, mel), expected, rtol=0, atol=1e-5)


def test_hifigan_exports_folded_with_parity(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"export needs the TensorFlow backend; backend is {keras.backend.backend()}")
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from keras_norms.export import exporter

    model, mel = _random_keras_generator(seed=2)
    expected = _outputs(model, mel)
    assert expected.std() > 0.1
    report = exporter.export_and_check(model, str(tmp_path), mel)
    print(
        "HiFi-GAN export max |diff|: SavedModel "
        f"{report['saved_model_max_abs_diff']:.3e}, TFLite {report['tflite_max_abs_diff']:.3e}"
    )
    assert report["saved_model_max_abs_diff"] <= 1e-4
    assert report["tflite_max_abs_diff"] <= 1e-4
    tflite = exporter.run_tflite(report["tflite"], mel)
    np.testing.assert_allclose(tflite, expected, rtol=0, atol=1e-4)
    # Folded: the SavedModel computes no weight norm (no square, no reciprocal square root).
    ops = exporter.saved_model_op_counts(report["saved_model"])
    assert ops["Rsqrt"] == 0 and ops["Square"] == 0 and ops["Tanh"] == 1
