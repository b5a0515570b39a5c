"""A real client: a MelGAN-style vocoder generator, exported with a dynamic time axis.

MelGAN (Kumar et al. 2019, arXiv:1910.06711) turns a mel spectrogram of any
number of frames into a waveform: weight-normalized (Salimans & Kingma 2016,
arXiv:1602.07868) 1-D convolutions with LeakyReLU, transposed convolutions
that upsample the time axis, residual stacks of dilated convolutions, and a
`tanh` output with one channel. The generator here is that, tiny (80 mel
bands, 16 channels, one x2 upsampling), written twice:

- as a subclassed `keras.Model`, as vocoder code usually is. Keras exports a
  subclassed model at the shape of its first call, every axis fixed: the
  files then refuse any other number of frames, unless the export is given
  `input_shape=(None, 80)` (`keras-norms-export --input-shape None,80`);
- as a functional model on `keras.Input((None, 80))`, whose `None` axis
  Keras keeps.

Each is exported with `input_shape=(None, 80)` (SavedModel, TFLite and ONNX,
TensorFlow backend) and checked at 32 frames and at 49 (`export_and_check`
checks every dynamic axis at a second size), then run at 50. The classes are
not registered: the CLI test loads them from this file (`--custom-code`), as
a user passes their model's code.
"""

import json
import os

import keras
import numpy as np
import pytest

from keras_norms import data_dependent_init
from keras_norms.layers import WeightNormalization

MELS = 80
CHANNELS = 16
FRAMES = 32  # the parity check's; its second size is 32 + 32 // 2 + 1 = 49
OTHER_FRAMES = 50  # neither: the files must run at it too
LRELU_SLOPE = 0.2
TOLERANCE = 1e-4  # export_and_check's default


def _wn_conv(filters, kernel_size, dilation_rate=1):
    return WeightNormalization(
        keras.layers.Conv1D(filters, kernel_size, dilation_rate=dilation_rate, padding="same")
    )


class ResidualStack(keras.layers.Layer):
    """MelGAN's residual block: `x + conv1x1(lrelu(conv_dilated(lrelu(x))))`, both WN."""

    def __init__(self, filters, dilation_rate=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.dilation_rate = dilation_rate
        self.dilated = _wn_conv(filters, 3, dilation_rate)
        self.pointwise = _wn_conv(filters, 1)
        self.activation = keras.layers.LeakyReLU(LRELU_SLOPE)

    def build(self, input_shape):
        self.dilated.build(input_shape)
        self.pointwise.build(tuple(input_shape[:-1]) + (self.filters,))

    def call(self, x):
        return x + self.pointwise(self.activation(self.dilated(self.activation(x))))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "dilation_rate": self.dilation_rate,
        }


class MelGANGenerator(keras.Model):
    """Mel frames `(batch, frames, 80)` to a waveform `(batch, 2 frames, 1)` in [-1, 1]."""

    def __init__(self, channels=CHANNELS, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.pre = _wn_conv(channels, 7)
        self.upsample = WeightNormalization(
            keras.layers.Conv1DTranspose(channels // 2, 4, strides=2, padding="same")
        )
        self.stack = [ResidualStack(channels // 2, rate) for rate in (1, 3)]
        self.post = _wn_conv(1, 7)
        self.activation = keras.layers.LeakyReLU(LRELU_SLOPE)

    def call(self, mel):
        x = self.upsample(self.activation(self.pre(mel)))
        for block in self.stack:
            x = block(x)
        return keras.ops.tanh(self.post(self.activation(x)))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


def functional_generator(channels=CHANNELS):
    """The same generator as a functional model on `keras.Input((None, 80))`."""
    mel = keras.Input((None, MELS), name="mel")
    x = keras.layers.LeakyReLU(LRELU_SLOPE)(_wn_conv(channels, 7)(mel))
    x = WeightNormalization(
        keras.layers.Conv1DTranspose(channels // 2, 4, strides=2, padding="same")
    )(x)
    for rate in (1, 3):
        x = ResidualStack(channels // 2, rate)(x)
    x = _wn_conv(1, 7)(keras.layers.LeakyReLU(LRELU_SLOPE)(x))
    return keras.Model(mel, keras.layers.Activation("tanh")(x), name="melgan_functional")


def _mel(num, frames, seed):
    return np.random.default_rng(seed).normal(size=(num, frames, MELS)).astype("float32")


def _initialized(make):
    """`make()`, its weight normalization initialized from 4 mel spectrograms of 32 frames."""
    model = make()
    mel = _mel(4, FRAMES, seed=0)
    data_dependent_init(model, mel)  # the subclassed one's first call: (4, 32, 80)
    return model, mel


def _exporter():
    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"export needs the TensorFlow backend; backend is {keras.backend.backend()}")
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("onnxruntime")
    from keras_norms.export import exporter

    return exporter


@pytest.mark.parametrize("make", [MelGANGenerator, functional_generator])
def test_vocoder_exports_with_a_dynamic_time_axis(make, tmp_path):
    """`input_shape=(None, 80)`: every file runs any number of frames, checked at 32 and 49."""
    exporter = _exporter()
    model, mel = _initialized(make)
    report = exporter.export_and_check(model, str(tmp_path), mel, input_shape=(None, MELS))
    print(
        f"{type(model).__name__} export max |diff| by input shape "
        f"{report['input_shapes']}: "
        + ", ".join(f"{f} {report[f + '_max_abs_diff_by_shape']}" for f in report["formats"])
    )
    assert report["export_input_shape"] == [None, MELS]
    assert report["input_shape"] == [FRAMES, MELS]
    assert report["input_shapes"] == [[FRAMES, MELS], [49, MELS]]
    assert "fixed_axes_note" not in report
    for name in ("saved_model", "tflite", "onnx"):
        by_shape = report[f"{name}_max_abs_diff_by_shape"]
        assert len(by_shape) == 2 and max(by_shape) <= TOLERANCE, (name, by_shape)
        assert report[f"{name}_max_abs_diff"] == max(by_shape)
    with open(tmp_path / "parity.json") as f:
        assert json.load(f)["input_shapes"] == [[FRAMES, MELS], [49, MELS]]
    # A third length, another batch size: each file runs it and matches Keras.
    other = _mel(2, OTHER_FRAMES, seed=1)
    expected = model.predict(other, verbose=0)
    assert expected.shape == (2, 2 * OTHER_FRAMES, 1)
    for run, name in [
        (exporter.run_saved_model, "saved_model"),
        (exporter.run_tflite, "tflite"),
        (exporter.run_onnx, "onnx"),
    ]:
        np.testing.assert_allclose(run(report[name], other), expected, atol=TOLERANCE)


def test_a_subclassed_vocoder_exported_without_input_shape_takes_only_its_first_length(tmp_path):
    """Keras' default: the first call's shape, (32, 80), fixed; the report says so in one line.

    The files then refuse 50 frames: the runners say which shape they take
    (the SavedModel itself fails inside a kernel, TFLite's XNNPack cannot
    reshape, onnxruntime names the dimension).
    """
    exporter = _exporter()
    import onnxruntime
    import tensorflow as tf

    model, mel = _initialized(MelGANGenerator)
    report = exporter.export_and_check(model, str(tmp_path), mel)
    assert report["fixed_axes_note"] == (
        "the subclassed model was exported with every axis fixed at its first call's shape "
        "(32, 80); pass input_shape=(None, 80) (keras-norms-export --input-shape None,80) to "
        "keep axes dynamic"
    )
    assert report["export_input_shape"] == [FRAMES, MELS]
    assert report["input_shapes"] == [[FRAMES, MELS]]  # nothing dynamic to check twice
    assert report["saved_model_max_abs_diff"] <= TOLERANCE
    other = _mel(2, OTHER_FRAMES, seed=1)
    for run, name, file_shape in [
        (exporter.run_saved_model, "saved_model", "(None, 32, 80)"),
        (exporter.run_tflite, "tflite", "(None, 32, 80)"),
    ]:
        with pytest.raises(ValueError) as error:
            run(report[name], other)
        assert str(error.value).endswith(
            f"takes inputs of shape {file_shape}; received (2, 50, 80)"
        )
    signature = tf.saved_model.load(report["saved_model"]).signatures["serving_default"]
    with pytest.raises(tf.errors.OpError):
        signature(tf.constant(other))
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument, match="50"):
        exporter.run_onnx(report["onnx"], other)


def test_export_cli_exports_a_subclassed_vocoder_with_a_dynamic_time_axis(tmp_path, capsys):
    """`--input-shape None,80 --parity-shape 50,80`: checked at 50 and 76 frames.

    Without `--input-shape`, `--parity-shape 50,80` is refused: the model's
    input shape is its first call's, (32, 80).
    """
    _exporter()
    from keras_norms.export import cli

    model, _ = _initialized(MelGANGenerator)
    path = str(tmp_path / "vocoder.keras")
    model.save(path)
    argv = [path, "--output", str(tmp_path / "out"), "--dataset", "random", "--num-samples", "4"]
    argv += ["--custom-code", os.path.abspath(__file__), "--parity-shape", "50,80"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--parity-shape must keep the model's input shape (32, 80)" in err
    assert "--input-shape None,80" in err
    assert cli.main(argv + ["--input-shape", "None,80"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith(
        "parity on 4 inputs of shape (50, 80) and (76, 80) (max |logit difference|): SavedModel "
    )
    assert out[2].startswith("by input shape: (50, 80): SavedModel ") and "; (76, 80): " in out[2]
    assert len(out) == 3  # no fixed-axes line
    with open(tmp_path / "out" / "parity.json") as f:
        report = json.load(f)
    assert report["export_input_shape"] == [None, MELS]
    assert report["input_shapes"] == [[50, MELS], [76, MELS]]
    assert max(report["onnx_max_abs_diff_by_shape"]) <= TOLERANCE
