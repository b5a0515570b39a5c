"""Bad input to `keras-norms-export` and `keras-norms-train`: one-line errors, never a traceback."""

import struct
import zipfile

import keras
import pytest

from keras_norms.export import cli as export_cli
from keras_norms.models import BUILDERS
from keras_norms.training import cli as train_cli


def _one_line_error(main, argv, capsys, prog):
    """The error `main(argv)` prints, after checking its status and that it is one line."""
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{prog}: error: ") and len(err.splitlines()) == 1, err
    return err


def _argparse_error(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def _export_error(path, capsys):
    argv = [str(path), "--output", str(path.parent / "out")]
    return _one_line_error(export_cli.main, argv, capsys, "keras-norms-export")


def _keras_file(tmp_path):
    inputs = keras.Input((4,))
    path = tmp_path / "model.keras"
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(path)
    return path


def _corrupt_member(path, name):
    """Flip the first byte of archive member `name`: its CRC no longer matches."""
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo(name).header_offset
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[offset + 26 : offset + 30])
    data[offset + 30 + name_length + extra_length] ^= 0xFF
    path.write_bytes(bytes(data))


def test_export_refuses_a_zip_without_config_json(tmp_path, capsys):
    path = tmp_path / "weights_only.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.weights.h5", b"")
    err = _export_error(path, capsys)
    assert f"{path} is not a Keras model archive: the zip file holds no config.json" in err


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda path: path.write_bytes(path.read_bytes()[:-100]), "(not a zip file)"),
        (lambda path: _corrupt_member(path, "config.json"), "Bad CRC-32 for file 'config.json'"),
    ],
    ids=["truncated", "corrupt"],
)
def test_export_says_a_damaged_keras_file_exists_but_cannot_be_read(
    damage, reason, tmp_path, capsys
):
    path = _keras_file(tmp_path)
    damage(path)
    err = _export_error(path, capsys)
    assert f"{path} exists but cannot be read as a .keras archive; it is corrupt or " in err
    assert reason in err and "not found" not in err


def test_export_says_a_missing_file_is_not_found(tmp_path, capsys):
    err = _export_error(tmp_path / "missing.keras", capsys)
    assert f"File not found: filepath={tmp_path / 'missing.keras'}" in err


@pytest.mark.parametrize("value", ["0", "-3"])
def test_export_refuses_a_num_samples_below_one(value, capsys):
    err = _argparse_error(
        export_cli.main, ["m.keras", "--output", "o", "--num-samples", value], capsys
    )
    assert f"argument --num-samples: expected a positive integer, got {value}" in err


@pytest.mark.parametrize(
    "template, message",
    [
        (
            "runs/{name}",
            "argument --output: unknown placeholder {name} in 'runs/{name}'; "
            "the placeholders are {model}, {norm}, {dataset}",
        ),
        ("runs/{}", "argument --output: unknown placeholder {} in 'runs/{}'"),
        ("runs/{model", "argument --output: expected '}' before end of string in 'runs/{model'"),
    ],
)
def test_train_refuses_an_output_with_unknown_placeholders(template, message, capsys):
    assert message in _argparse_error(train_cli.main, ["--output", template], capsys)


def test_train_refuses_an_init_batch_without_a_standard_deviation(capsys):
    err = _argparse_error(train_cli.main, ["--init-batch-size", "1"], capsys)
    assert (
        "argument --init-batch-size: expected at least 2 examples (data-dependent init "
        "takes a standard deviation over them), got 1"
    ) in err


@pytest.mark.parametrize(
    "builder", [name for name, builder in sorted(BUILDERS.items()) if builder.min_input_size > 1]
)
def test_train_refuses_an_image_size_below_the_builders_minimum(builder, capsys):
    minimum = BUILDERS[builder].min_input_size
    argv = ["--model", builder, "--image-size", str(minimum - 1)]
    assert (
        f"argument --image-size: --model {builder} needs images of at least "
        f"{minimum}x{minimum}. Received: --image-size {minimum - 1}"
    ) in _argparse_error(train_cli.main, argv, capsys)
