"""SavedModel, TFLite and ONNX export, parity checks and `keras-norms-export`."""

import json
import os
import re
import sys

import keras
import numpy as np
import pytest

from keras_norms import data_dependent_init
from keras_norms.export import cli, exporter
from keras_norms.export.parity import ParityError
from keras_norms.graph import iter_layers
from keras_norms.layers import WeightNormalization
from keras_norms.models import BUILDERS, convpool_cnn_c
from keras_norms.optional import MissingDependencyError
from keras_norms.training import preprocessing
from tests.builder_cases import CASES, build_small, small_input_shape
from tests.layer_test_helper import perturb_statistics

# What a folded weight, batch or mean-only normalization must not leave in a graph.
NORM_OPS_SAVED_MODEL = ("Rsqrt", "Sqrt", "Square", "Sum", "Sub")
NORM_OPS_ONNX = ("Sqrt", "Reciprocal", "ReduceSum", "ReduceMean", "ReduceL2", "Div", "Sub")


def _initialized_model(norm, seed=0):
    rng = np.random.default_rng(seed)
    model = convpool_cnn_c((16, 16, 1), 10, norm)
    x = rng.normal(size=(64, 16, 16, 1)).astype("float32")
    data_dependent_init(model, x)
    perturb_statistics(model, rng)
    return model, x


def _perturb_biases(model, rng):
    """Random biases, and GroupNormalization's gamma and beta, in every layer of `model`.

    A zero bias hides nothing from a test: tf2onnx drops an `Add` of zeros.
    (Normalizations with running statistics get theirs from `perturb_statistics`.)
    """
    for layer in iter_layers(model):
        names = ("bias",) if hasattr(layer, "moving_mean") else ("bias", "gamma", "beta")
        for name in names:
            variable = getattr(layer, name, None)
            if isinstance(variable, keras.Variable):
                variable.assign(variable + rng.normal(0.0, 0.1, variable.shape))


def _builder_case(builder, norm, num_inputs=16):
    """`builder` with `norm` on its small input, its weights as after training, and inputs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_inputs,) + small_input_shape(builder)).astype("float32")
    kwargs = {}
    if BUILDERS[builder].data_normalizations:  # NIN: element-wise keras.layers.Normalization
        kwargs["data_normalization"] = preprocessing.standardizer(x, elementwise=True)
    model = build_small(builder, norm, **kwargs)
    data_dependent_init(model, x)
    perturb_statistics(model, rng)
    _perturb_biases(model, rng)
    return model, x


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`exported(builder, norm)`: `(model, inputs, report)`, exported once to every format."""
    cache = {}

    def export(builder, norm):
        if (builder, norm) not in cache:
            model, x = _builder_case(builder, norm)
            output_dir = str(tmp_path_factory.mktemp(f"{builder}_{norm}"))
            cache[builder, norm] = model, x, exporter.export_and_check(model, output_dir, x)
        return cache[builder, norm]

    return export


@pytest.mark.slow
@pytest.mark.parametrize("builder, norm", CASES)
def test_every_builder_and_norm_exports_to_every_format_with_parity(builder, norm, exported):
    """SavedModel, TFLite and ONNX of every (builder, norm), folded or not, within 1e-4.

    Includes the norms that cannot fold: Normalized Convolution and
    GroupNormalization (per-example statistics), DWCK and learned statistics
    after a ReLU (per-channel affine maps).
    """
    model, x, report = exported(builder, norm)
    assert report["formats"] == ["saved_model", "tflite", "onnx"]
    differences = {key: report[f"{key}_max_abs_diff"] for key in ("saved_model", "tflite", "onnx")}
    assert max(differences.values()) <= 1e-4, differences
    with open(os.path.join(os.path.dirname(report["onnx"]), "parity.json")) as f:
        assert json.load(f)["onnx_max_abs_diff"] == differences["onnx"]
    # The check compares against the Keras model's own logits on the same inputs,
    # and the batch axis is dynamic: one example runs as well as sixteen.
    expected = model.predict(x, verbose=0)
    for run, path in [(exporter.run_tflite, report["tflite"]), (exporter.run_onnx, report["onnx"])]:
        assert run(path, x).shape == (16, 3)
        np.testing.assert_allclose(run(path, x[:1]), expected[:1], atol=1e-4)


@pytest.mark.slow
def test_nin_normprop_exports_plain_convolutions(exported):
    """NormProp's gamma / ||W_i|| is folded into plain kernels, in both graphs.

    (The global data normalization before them stays: one `Sub` and one `Mul`.)
    """
    _, _, report = exported("nin", "normprop")
    ops = exporter.saved_model_op_counts(report["saved_model"])
    assert ops["Conv2D"] == 9 and ops["Rsqrt"] == 0 and ops["Sum"] == 0
    onnx_ops = exporter.onnx_op_counts(report["onnx"])
    assert onnx_ops["Conv"] == 9 and onnx_ops["Sub"] == 1
    assert not any(onnx_ops[op] for op in ("Sqrt", "Reciprocal", "ReduceSum", "ReduceL2", "Div"))


def test_parity_failure_lists_every_formats_difference(tmp_path, monkeypatch):
    """Each format's largest difference, then each size's: the time axis is checked at 16 and 25."""
    model = _variable_length_model()
    x = np.random.default_rng(6).normal(size=(8, 16, 1)).astype("float32")
    data_dependent_init(model, x)
    broken = exporter.run_onnx
    monkeypatch.setattr(exporter, "run_onnx", lambda path, inputs: broken(path, inputs) + 1e-3)
    number = r"\d\.\d{3}e[+-]\d\d"
    each = rf"SavedModel {number}, TFLite {number}, ONNX 1\.0\d*e-03"
    with pytest.raises(
        ParityError,
        match=rf"max \|logit difference\| 1\.0\d*e-03 > tolerance 1\.0e-04 \({each}\); "
        rf"by input shape: \(16, 1\): {each}; \(25, 1\): {each}$",
    ):
        exporter.export_and_check(model, str(tmp_path), x)
    with open(tmp_path / "parity.json") as f:
        report = json.load(f)
    assert report["input_shapes"] == [[16, 1], [25, 1]]
    assert report["onnx_max_abs_diff"] == max(report["onnx_max_abs_diff_by_shape"]) > 1e-4


@pytest.mark.parametrize("norm", ["wn", "wn_mobn", "bn"])
def test_deployed_graph_is_the_plain_networks_graph(norm, exported):
    """Folded: neither the SavedModel nor the ONNX file holds a norm or a mean subtraction.

    Same op counts as the plain network's export, biases nonzero in both.
    (The TFLite converter constant-folds an unfolded kernel too, so the
    SavedModel and ONNX graphs are where folding shows.)
    """
    _, _, plain = exported("convpool_cnn_c", "none")
    _, _, report = exported("convpool_cnn_c", norm)
    ops = exporter.saved_model_op_counts(report["saved_model"])
    assert ops == exporter.saved_model_op_counts(plain["saved_model"])
    assert ops["Conv2D"] == 9 and not any(ops[op] for op in NORM_OPS_SAVED_MODEL)
    onnx_ops = exporter.onnx_op_counts(report["onnx"])
    assert onnx_ops == exporter.onnx_op_counts(plain["onnx"])
    assert onnx_ops["Conv"] == 9 and onnx_ops["MatMul"] == 1 and onnx_ops["Add"] == 1
    assert not any(onnx_ops[op] for op in NORM_OPS_ONNX)


@pytest.mark.parametrize("formats", [("saved_model", "pb"), "onnx", (), None, ["ONNX"]], ids=repr)
def test_export_and_check_refuses_unknown_formats(formats, tmp_path):
    with pytest.raises(ValueError) as error:
        exporter.export_and_check(
            _variable_length_model(), str(tmp_path / "out"), np.zeros((1, 8, 1)), formats=formats
        )
    message = str(error.value)
    assert message.startswith("export_and_check expected `formats` to be a tuple of one or more")
    assert "'saved_model', 'tflite', 'onnx'" in message
    assert message.endswith(f"Received: formats={formats!r}")
    assert not (tmp_path / "out").exists()


def test_export_and_check_writes_only_the_formats_asked_for(tmp_path):
    """TFLite alone converts from a SavedModel in a temporary directory, not kept."""
    model = _variable_length_model()
    x = np.random.default_rng(10).normal(size=(4, 16, 1)).astype("float32")
    data_dependent_init(model, x)
    report = exporter.export_and_check(model, str(tmp_path), x, formats=("onnx", "tflite"))
    assert sorted(os.listdir(tmp_path)) == ["model.onnx", "model.tflite", "parity.json"]
    assert report["formats"] == ["tflite", "onnx"]
    assert "saved_model" not in report and "saved_model_max_abs_diff" not in report
    assert report["tflite_max_abs_diff"] <= 1e-4 and report["onnx_max_abs_diff"] <= 1e-4


def test_missing_onnxruntime_is_reported_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    with pytest.raises(MissingDependencyError) as error:
        exporter.export_and_check(
            _variable_length_model(), str(tmp_path / "out"), np.zeros((1, 8, 1))
        )
    assert str(error.value) == (
        "ONNX export needs onnxruntime, which is not installed; "
        "install it with: pip install 'keras-norms[export]'"
    )
    assert not (tmp_path / "out").exists()
    # Without ONNX, the other formats still export.
    x = np.random.default_rng(11).normal(size=(2, 8, 1))
    report = exporter.export_and_check(
        _variable_length_model(), str(tmp_path / "out"), x, formats=("saved_model",)
    )
    assert report["saved_model_max_abs_diff"] <= 1e-4


def test_onnx_keeps_normalization_statistics_as_constants(tmp_path):
    """Keras `Normalization` holds its statistics as constant tensors, not variables.

    tf2onnx alone would make each an input of the ONNX graph, with its value
    lost; the export freezes them first: the only input is the images.
    """
    x = np.random.default_rng(12).normal(2.0, 3.0, size=(8, 6, 6, 2)).astype("float32")
    inputs = keras.Input((6, 6, 2), name="images")
    h = preprocessing.standardizer(x)(inputs)  # adapted per channel: the training CLI's
    h = preprocessing.standardizer(x, elementwise=True)(h)  # given per pixel: NIN's
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    path = exporter.export_onnx(model, str(tmp_path / "model.onnx"))
    import onnx

    assert [i.name for i in onnx.load(path).graph.input] == ["images"]
    np.testing.assert_allclose(
        exporter.run_onnx(path, x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_onnx_op_counts_include_subgraphs_and_functions(tmp_path):
    """`If` branches and local functions are counted with the main graph."""
    from onnx import TensorProto, checker, helper, save

    def branch(name, op):
        out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [2])
        return helper.make_graph([helper.make_node(op, ["x"], [f"{name}_y"])], name, [], [out])

    function = helper.make_function(
        "local",
        "Twice",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        opset_imports=[helper.make_opsetid("", 18)],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("ReduceSum", ["r"], ["s"], keepdims=0),
        helper.make_node("Cast", ["s"], ["c"], to=TensorProto.BOOL),
        helper.make_node(
            "If", ["c"], ["i"], then_branch=branch("then", "Neg"), else_branch=branch("else", "Abs")
        ),
        helper.make_node("Twice", ["i"], ["y"], domain="local"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph,
        functions=[function],
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
        ir_version=10,  # onnxruntime 1.31 reads up to 13; onnx 1.23 writes 14 by default
    )
    checker.check_model(model)
    path = str(tmp_path / "model.onnx")
    save(model, path)
    assert exporter.onnx_op_counts(path) == {
        "Relu": 1,
        "ReduceSum": 1,
        "Cast": 1,
        "If": 1,
        "Neg": 1,
        "Abs": 1,
        "Twice": 1,
        "Add": 1,
    }
    x = np.array([1.0, -2.0], "float32")  # sum(relu(x)) = 1, True: the Neg branch
    np.testing.assert_allclose(exporter.run_onnx(path, x), -2 * x)


def test_export_cli_on_a_keras_file(tmp_path, capsys):
    model, _ = _initialized_model("wn", seed=1)
    path = str(tmp_path / "model.keras")
    model.save(path)
    out_dir = str(tmp_path / "export")
    assert cli.main([path, "--output", out_dir, "--dataset", "digits", "--num-samples", "32"]) == 0
    assert {"saved_model", "model.tflite", "model.onnx", "parity.json"} <= set(os.listdir(out_dir))
    out = capsys.readouterr().out
    assert f"ONNX: {os.path.join(out_dir, 'model.onnx')}" in out
    assert re.search(r"parity on 32 inputs .*: SavedModel .*, TFLite .*, ONNX \d\.\d\de-\d\d$", out)


def test_export_cli_writes_the_formats_asked_for(tmp_path, capsys):
    model = _variable_length_model()
    path = str(tmp_path / "model.keras")
    model.save(path)
    out_dir = tmp_path / "out"
    argv = [path, "--output", str(out_dir), "--dataset", "random", "--num-samples", "4"]
    assert cli.main(argv + ["--format", "onnx"]) == 0
    assert sorted(os.listdir(out_dir)) == ["model.onnx", "parity.json"]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"ONNX: {out_dir / 'model.onnx'}"
    assert re.fullmatch(r"parity on 4 inputs .*\(max \|logit difference\|\): ONNX \S+", out[1])


def _argparse_errors(argv, capsys):
    """The error lines `keras-norms-export ARGV` prints when argparse refuses it (status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    return [line for line in capsys.readouterr().err.splitlines() if "error" in line]


@pytest.mark.parametrize("value", ["onnx,pb", "", "onnx,", "ONNX"])
def test_export_cli_refuses_an_unknown_format(value, capsys):
    assert _argparse_errors(["m.keras", "--output", "o", "--format", value], capsys) == [
        "keras-norms-export: error: argument --format: expected one or more of "
        f"saved_model,tflite,onnx separated by commas, got {value!r}"
    ]


def test_the_earlier_spelling_savedmodel_names_the_saved_model_format():
    from keras_norms.export.parity import check_formats

    assert check_formats(("onnx", "savedmodel")) == ("saved_model", "onnx")
    assert cli.build_parser().parse_args(
        ["m", "--output", "o", "--format", "savedmodel"]
    ).format == ("saved_model",)


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
    assert report["onnx_max_abs_diff"] <= 1e-4
    # Exported at its first call's shape, every axis fixed (Keras' default): the report says so.
    assert report["export_input_shape"] == [8, 8, 2] and report["input_shapes"] == [[8, 8, 2]]
    assert report["fixed_axes_note"] == (
        "the subclassed model was exported with every axis fixed at its first call's shape "
        "(8, 8, 2); pass input_shape=(None, None, 2) (keras-norms-export --input-shape "
        "None,None,2) to keep axes dynamic"
    )
    ops = exporter.saved_model_op_counts(report["saved_model"])
    assert ops["Rsqrt"] == 0 and ops["Square"] == 0 and ops["Conv2D"] == 1
    onnx_ops = exporter.onnx_op_counts(report["onnx"])
    assert onnx_ops["Conv"] == 1 and not any(onnx_ops[op] for op in NORM_OPS_ONNX)
    np.testing.assert_allclose(
        exporter.run_onnx(report["onnx"], x[:3]), model.predict(x[:3], verbose=0), atol=1e-4
    )
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
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("parity on 8 inputs of shape (8, 8, 2) (max |logit difference|)")
    assert out[2].startswith("the subclassed model was exported with every axis fixed at its ")
    assert out[2].endswith("(keras-norms-export --input-shape None,None,2) to keep axes dynamic")
    ops = exporter.saved_model_op_counts(str(tmp_path / "out" / "saved_model"))
    assert ops["Rsqrt"] == 0 and ops["Conv2D"] == 1
    onnx_ops = exporter.onnx_op_counts(str(tmp_path / "out" / "model.onnx"))
    assert onnx_ops["Conv"] == 1 and onnx_ops["Sqrt"] == 0


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
    "make_model, options, parity_shapes",
    [
        (_variable_length_model, ["--dataset", "random"], [[64, 1], [97, 1]]),
        (
            _variable_length_model,
            ["--dataset", "random", "--parity-shape", "100,1"],
            [[100, 1], [151, 1]],
        ),
        (
            _variable_size_image_model,
            ["--dataset", "digits"],
            [[16, 16, 1], [25, 16, 1], [16, 25, 1]],
        ),
    ],
)
def test_export_cli_keeps_none_axes_dynamic(make_model, options, parity_shapes, tmp_path, capsys):
    """None axes get a size for parity (64, --parity-shape, the images' own) and stay dynamic.

    Each is also checked at a second size (size + size // 2 + 1), one axis at a time.
    """
    model = make_model()
    path = str(tmp_path / "model.keras")
    model.save(path)
    out_dir = tmp_path / "out"
    assert cli.main([path, "--output", str(out_dir), "--num-samples", "4"] + options) == 0
    shapes = " and ".join(str(tuple(shape)) for shape in parity_shapes)
    assert f"parity on 4 inputs of shape {shapes} (max |logit difference|)" in (
        capsys.readouterr().out
    )
    parity_shape = parity_shapes[0]
    with open(out_dir / "parity.json") as f:
        report = json.load(f)
    assert report["input_shape"] == parity_shape and report["onnx_max_abs_diff"] <= 1e-4
    assert report["input_shapes"] == parity_shapes
    assert report["export_input_shape"] == [None] * (len(parity_shape) - 1) + [1]
    assert len(report["tflite_max_abs_diff_by_shape"]) == len(parity_shapes)
    # Another batch size and length or image size than the parity check's runs in the
    # TFLite and ONNX files.
    other_shape = (2,) + tuple(size + 5 for size in parity_shape[:-1]) + (1,)
    other = np.random.default_rng(9).normal(size=other_shape).astype("float32")
    expected = model.predict(other, verbose=0)
    for run, name in [(exporter.run_tflite, "model.tflite"), (exporter.run_onnx, "model.onnx")]:
        np.testing.assert_allclose(run(str(out_dir / name), other), expected, atol=1e-4)


def test_parity_shapes_give_each_dynamic_axis_a_second_size():
    from keras_norms.export.parity import parity_shapes, resized_inputs

    assert parity_shapes((32, 80), (None, 80)) == [(32, 80), (49, 80)]
    assert parity_shapes((16, 16, 1), (None, None, 1)) == [(16, 16, 1), (25, 16, 1), (16, 25, 1)]
    assert parity_shapes((32, 80), (32, 80)) == [(32, 80)]
    x = np.arange(2 * 3 * 2).reshape(2, 3, 2)
    longer = resized_inputs(x, (5, 2))  # the frames again: 0, 1, 2, 0, 1
    np.testing.assert_array_equal(longer, x[:, [0, 1, 2, 0, 1]])
    assert resized_inputs(x, (3, 2)) is x


@pytest.mark.parametrize(
    "input_shape",
    [(None,), (None, 2), (None, 8, 1), (4, 1), (0, 1), (None, True), "None,1", 8, (None, 1.0)],
    ids=repr,
)
def test_export_and_check_refuses_an_input_shape_that_does_not_fit_the_inputs(
    input_shape, tmp_path
):
    with pytest.raises(ValueError) as error:
        exporter.export_and_check(
            _variable_length_model(),
            str(tmp_path / "out"),
            np.zeros((2, 8, 1)),
            input_shape=input_shape,
        )
    message = str(error.value)
    assert message.startswith("export_and_check expected `input_shape` to be the shape of one")
    assert "fits the inputs' shape (8, 1) (e.g. (None, 1))" in message
    assert message.endswith(f"Received: input_shape={input_shape!r}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["None,x", "", "0,80", "None,,80", "-1,80"])
def test_export_cli_refuses_a_bad_input_shape(value, capsys):
    assert _argparse_errors(["m.keras", "--output", "o", f"--input-shape={value}"], capsys) == [
        "keras-norms-export: error: argument --input-shape: expected positive integers or None "
        f"separated by commas, such as None,80, got {value!r}"
    ]


def test_export_cli_input_shape_spellings():
    parse = cli.build_parser().parse_args
    assert parse(["m", "--output", "o", "--input-shape", "None,80"]).input_shape == (None, 80)
    assert parse(["m", "--output", "o", "--input-shape", "none, 80"]).input_shape == (None, 80)
    assert parse(["m", "--output", "o"]).input_shape is None


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["--input-shape", "None,1,1"],
            "--input-shape must have as many axes as the model's input shape (None, 1), each None "
            "or the model's size, without the batch axis. Received: --input-shape None,1,1",
        ),
        (
            ["--input-shape", "None,2"],
            "--input-shape must have as many axes as the model's input shape (None, 1), each None "
            "or the model's size, without the batch axis. Received: --input-shape None,2",
        ),
        (
            ["--input-shape", "32,1", "--parity-shape", "50,1"],
            "--parity-shape must keep --input-shape (32, 1) and give each None axis a size. "
            "Received: --parity-shape 50,1",
        ),
    ],
)
def test_export_cli_refuses_an_input_shape_that_does_not_fit_the_model(
    options, message, tmp_path, capsys
):
    path = str(tmp_path / "model.keras")
    _variable_length_model().save(path)
    out_dir = tmp_path / "out"
    assert cli.main([path, "--output", str(out_dir), "--dataset", "random"] + options) == 1
    assert capsys.readouterr().err.splitlines() == [f"keras-norms-export: error: {message}"]
    assert not out_dir.exists()


class _GroupedNet(keras.Model):
    """A subclassed model holding grouped convolutions, one weight-normalized."""

    def __init__(self):
        super().__init__(name="grouped_net")
        self.first = keras.layers.Conv1D(4, 3, padding="same")
        self.grouped = WeightNormalization(keras.layers.Conv1D(6, 3, groups=2, padding="same"))
        self.last = keras.layers.Conv1D(6, 1, groups=3)

    def call(self, x):
        return self.last(self.grouped(self.first(x)))


def _grouped_functional():
    inputs = keras.Input((None, 4))
    x = WeightNormalization(keras.layers.Conv1DTranspose(4, 4, strides=2, padding="same"))(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = WeightNormalization(keras.layers.Conv1D(6, 3, groups=2, padding="same", use_bias=False))(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("make", [_grouped_functional, _GroupedNet])
def test_grouped_convolutions_export_to_every_format_with_parity(make, tmp_path):
    """Keras runs a grouped convolution as an XLA function that tf2onnx cannot convert
    (onnxruntime refused the file); its deployment form splits it (folding.split_groups)."""
    model = make()
    x = np.random.default_rng(42).normal(size=(3, 12, 4)).astype("float32")
    model(x)
    before = [(v.path, keras.ops.convert_to_numpy(v)) for v in model.weights]
    report = exporter.export_and_check(model, str(tmp_path), x, input_shape=(None, 4))
    assert report["input_shapes"] == [[12, 4], [19, 4]]
    for name in ("saved_model", "tflite", "onnx"):
        assert report[f"{name}_max_abs_diff"] < 1e-5
    after = [(v.path, keras.ops.convert_to_numpy(v)) for v in model.weights]
    assert [p for p, _ in after] == [p for p, _ in before]  # a subclassed model is restored
    for (_, a), (_, b) in zip(before, after):
        np.testing.assert_array_equal(a, b)
