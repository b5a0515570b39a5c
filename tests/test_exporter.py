"""SavedModel and TFLite export, parity checks and `keras-norms-export`."""

import json
import os

import keras
import numpy as np
import pytest

from keras_norms import data_dependent_init
from keras_norms.export import cli, exporter
from keras_norms.export.parity import ParityError
from keras_norms.layers import WeightNormalization
from keras_norms.models import all_cnn_c, convpool_cnn_c, nin, resnet18
from keras_norms.models.convpool_cnn_c import NORMS as CONVPOOL_NORMS
from keras_norms.training import data
from tests.layer_test_helper import perturb_statistics


def _initialized_model(norm, seed=0):
    rng = np.random.default_rng(seed)
    model = convpool_cnn_c((16, 16, 1), 10, norm)
    x = rng.normal(size=(64, 16, 16, 1)).astype("float32")
    data_dependent_init(model, x)
    perturb_statistics(model, rng)
    return model, x


@pytest.mark.slow
@pytest.mark.parametrize("norm", CONVPOOL_NORMS)
def test_saved_model_and_tflite_match_keras(norm, tmp_path):
    model, x = _initialized_model(norm)
    report = exporter.export_and_check(model, str(tmp_path), x)
    assert report["saved_model_max_abs_diff"] <= 1e-4
    assert report["tflite_max_abs_diff"] <= 1e-4
    # The check compares against the Keras model's own logits on the same inputs.
    expected = model.predict(x, verbose=0)
    tflite = exporter.run_tflite(report["tflite"], x)
    assert tflite.shape == (64, 10)
    np.testing.assert_allclose(tflite, expected, atol=1e-4)
    with open(tmp_path / "parity.json") as f:
        assert json.load(f)["num_inputs"] == 64


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["normprop", "bn", "none"])
def test_nin_saved_model_and_tflite_match_keras(norm, tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 32, 32, 1)).astype("float32")
    model = nin((32, 32, 1), 10, norm, data_normalization=data.standardizer(x, elementwise=True))
    report = exporter.export_and_check(model, str(tmp_path), x)
    assert report["tflite_max_abs_diff"] <= 1e-4 and report["saved_model_max_abs_diff"] <= 1e-4
    if norm == "normprop":  # gamma / ||W_i|| folded into plain kernels
        ops = _saved_model_op_counts(report["saved_model"])
        assert ops["Conv2D"] == 9 and ops["Rsqrt"] == 0 and ops["Sum"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["dwck", "learned", "bn", "none"])
def test_all_cnn_c_saved_model_and_tflite_match_keras(norm, tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 32, 32, 1)).astype("float32")
    model = all_cnn_c((32, 32, 1), 10, norm)
    model(x, training=True)  # move running statistics away from their start
    report = exporter.export_and_check(model, str(tmp_path), x)
    assert report["tflite_max_abs_diff"] <= 1e-4 and report["saved_model_max_abs_diff"] <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["nc", "gn"])
def test_resnet18_saved_model_and_tflite_match_keras(norm, tmp_path):
    x = np.random.default_rng(4).normal(size=(8, 16, 16, 1)).astype("float32")
    report = exporter.export_and_check(resnet18((16, 16, 1), 10, norm), str(tmp_path), x)
    assert report["tflite_max_abs_diff"] <= 1e-4 and report["saved_model_max_abs_diff"] <= 1e-4


def test_parity_failure_raises(tmp_path, monkeypatch):
    model, x = _initialized_model("wn_mobn")
    broken = exporter.run_tflite
    monkeypatch.setattr(exporter, "run_tflite", lambda path, inputs: broken(path, inputs) + 1e-3)
    with pytest.raises(
        ParityError, match=r"max \|logit difference\| 1\.0\d*e-03 > tolerance 1\.0e-04"
    ):
        exporter.export_and_check(model, str(tmp_path), x[:8])


def _saved_model_op_counts(path):
    import collections

    import tensorflow as tf

    graph = tf.saved_model.load(path).signatures["serving_default"].graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return collections.Counter(node.op for node in nodes)


@pytest.mark.parametrize("norm", ["wn", "wn_mobn", "bn"])
def test_deployed_graph_is_the_plain_networks_graph(norm, tmp_path):
    """Folded: the SavedModel holds no norm (Square, Sum, Rsqrt) or mean subtraction.

    (The TFLite converter constant-folds an unfolded kernel too, so the
    SavedModel is where folding shows.)
    """
    plain, x = _initialized_model("none")
    normalized, _ = _initialized_model(norm)
    plain_report = exporter.export_and_check(plain, str(tmp_path / "none"), x[:4])
    report = exporter.export_and_check(normalized, str(tmp_path / norm), x[:4])
    ops = _saved_model_op_counts(report["saved_model"])
    assert ops == _saved_model_op_counts(plain_report["saved_model"])
    assert ops["Conv2D"] == 9 and ops["Rsqrt"] == 0 and ops["Sum"] == 0


def test_export_cli_on_a_keras_file(tmp_path, capsys):
    model, _ = _initialized_model("wn", seed=1)
    path = str(tmp_path / "model.keras")
    model.save(path)
    out_dir = str(tmp_path / "export")
    assert cli.main([path, "--output", out_dir, "--dataset", "digits", "--num-samples", "32"]) == 0
    assert {"saved_model", "model.tflite", "parity.json"} <= set(os.listdir(out_dir))
    assert "parity on 32 inputs" in capsys.readouterr().out


def test_export_cli_reports_a_missing_file(tmp_path, capsys):
    assert cli.main([str(tmp_path / "missing.keras"), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-norms-export: error:") and len(err.splitlines()) == 1


USER_CODE = '''
import keras
from keras_norms.layers import WeightNormalization


class UserBlock(keras.layers.Layer):
    """A user's residual block holding a weight-normalized convolution (not registered)."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = WeightNormalization(keras.layers.Conv2D(filters, 3, padding="same"))

    def call(self, x):
        return x + keras.ops.relu(self.conv(x))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}
'''


def test_export_cli_takes_the_users_code_for_custom_classes(tmp_path, capsys):
    code = tmp_path / "user_blocks.py"
    code.write_text(USER_CODE)
    user_blocks = cli.user_objects([str(code)])
    inputs = keras.Input((8, 8, 4))
    outputs = keras.layers.GlobalAveragePooling2D()(user_blocks["UserBlock"](4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(outputs))
    x = np.random.default_rng(5).normal(size=(16, 8, 8, 4)).astype("float32")
    data_dependent_init(model, x)
    path = str(tmp_path / "model.keras")
    model.save(path)
    argv = [path, "--output", str(tmp_path / "out"), "--dataset", "random", "--num-samples", "8"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'UserBlock', a class Keras cannot find" in err
    assert "--custom-code FILE.py" in err
    assert cli.main(argv + ["--custom-code", str(code)]) == 0
    assert "parity on 8 inputs" in capsys.readouterr().out


def test_export_cli_reports_user_code_that_does_not_import(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    argv = [str(tmp_path / "m.keras"), "--output", str(tmp_path / "o"), "--custom-code"]
    assert cli.main(argv + [str(broken)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot import --custom-code" in err and "ModuleNotFoundError" in err


@keras.saving.register_keras_serializable(package="tests")
class SubclassedClassifier(keras.Model):
    """A subclassed model, which clone_model cannot copy: its WN folds in place for export."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = WeightNormalization(keras.layers.Conv2D(4, 3, activation="relu"))
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = WeightNormalization(keras.layers.Dense(3))

    def call(self, x):
        return self.head(self.pool(self.conv(x)))


def test_a_subclassed_model_exports_with_weight_norm_folded_in_place(tmp_path):
    rng = np.random.default_rng(7)
    model = SubclassedClassifier(name="subclassed_classifier")
    x = rng.normal(size=(16, 8, 8, 2)).astype("float32")
    data_dependent_init(model, x)
    before = [np.array(w) for w in model.get_weights()]
    report = exporter.export_and_check(model, str(tmp_path), x)
    assert report["saved_model_max_abs_diff"] <= 1e-4 and report["tflite_max_abs_diff"] <= 1e-4
    ops = exporter.saved_model_op_counts(report["saved_model"])
    assert ops["Rsqrt"] == 0 and ops["Square"] == 0 and ops["Conv2D"] == 1
    # Restored after export: v, g, bias as they were; the model still trains as WN.
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert not any(layer._folded for layer in (model.conv, model.head))


def test_export_cli_exports_a_subclassed_model(tmp_path, capsys):
    model = SubclassedClassifier(name="subclassed_classifier")
    x = np.random.default_rng(8).normal(size=(16, 8, 8, 2)).astype("float32")
    data_dependent_init(model, x)
    path = str(tmp_path / "model.keras")
    model.save(path)
    argv = [path, "--output", str(tmp_path / "out"), "--dataset", "random", "--num-samples", "8"]
    assert cli.main(argv) == 0
    assert "parity on 8 inputs" in capsys.readouterr().out
    ops = exporter.saved_model_op_counts(str(tmp_path / "out" / "saved_model"))
    assert ops["Rsqrt"] == 0 and ops["Conv2D"] == 1


def _variable_length_model():
    """A vocoder-like stack on `keras.Input((None, 1))`: any number of time steps."""
    inputs = keras.Input((None, 1))
    x = WeightNormalization(keras.layers.Conv1D(4, 3, padding="same"))(inputs)
    return keras.Model(inputs, keras.layers.Conv1D(1, 3, padding="same")(x))


def _variable_size_image_model():
    """A classifier on `keras.Input((None, None, 1))`: images of any height and width."""
    inputs = keras.Input((None, None, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(x))


@pytest.mark.parametrize(
    "make_model, options, parity_shape",
    [
        (_variable_length_model, ["--dataset", "random"], [64, 1]),
        (_variable_length_model, ["--dataset", "random", "--parity-shape", "100,1"], [100, 1]),
        (_variable_size_image_model, ["--dataset", "digits"], [16, 16, 1]),
    ],
)
def test_export_cli_keeps_none_axes_dynamic(make_model, options, parity_shape, tmp_path, capsys):
    """None axes get a size for parity (64, --parity-shape, the images' own) and stay dynamic."""
    model = make_model()
    path = str(tmp_path / "model.keras")
    model.save(path)
    out_dir = tmp_path / "out"
    assert cli.main([path, "--output", str(out_dir), "--num-samples", "4"] + options) == 0
    assert f"parity on 4 inputs of shape {tuple(parity_shape)}" in capsys.readouterr().out
    with open(out_dir / "parity.json") as f:
        assert json.load(f)["input_shape"] == parity_shape
    # Another length or image size than the parity check's runs in the TFLite file.
    other_shape = (2,) + tuple(size + 5 for size in parity_shape[:-1]) + (1,)
    other = np.random.default_rng(9).normal(size=other_shape).astype("float32")
    np.testing.assert_allclose(
        exporter.run_tflite(str(out_dir / "model.tflite"), other),
        model.predict(other, verbose=0),
        atol=1e-4,
    )
