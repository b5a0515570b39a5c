"""`keras-norms-train` end to end, resume, and bad input."""

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_norms import datasets, precise_statistics
from keras_norms.folding import is_mixed_precision
from keras_norms.graph import iter_layers
from keras_norms.layers import WeightNormalization
from keras_norms.models import BUILDERS
from keras_norms.training import cli, trainer
from keras_norms.training.config import RUN_FLAGS

FAST = ["--image-size", "12", "--batch-size", "200", "--verbose", "0"]


def _history_epochs(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return json.load(f)


@pytest.mark.slow
def test_tiny_digits_run_writes_the_run_directory_and_exports(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    argv = ["--epochs", "1", "--output", run_dir, "--export"] + FAST + ["--verbose", "2"]
    assert cli.main(argv) == 0
    assert {"model.keras", "history.csv", "metrics.json", "export"} <= set(os.listdir(run_dir))
    metrics = _metrics(run_dir)
    assert metrics["dataset"] == "digits" and metrics["norm"] == "wn_mobn"
    assert metrics["epochs"] == 1 and metrics["train_wall_time_s"] > 0
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["export"]["tflite_max_abs_diff"] <= 1e-4
    assert os.path.isfile(os.path.join(run_dir, "export", "model.tflite"))
    assert _history_epochs(run_dir) == [0]
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    assert model.input_shape == (None, 12, 12, 1)
    weight_normalized = [
        layer for layer in iter_layers(model) if isinstance(layer, WeightNormalization)
    ]
    assert len(weight_normalized) == 10  # nine convolutions and the logits
    assert all(bool(keras.ops.convert_to_numpy(layer.initialized)) for layer in weight_normalized)
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "export parity" in out
    # A line says what the run does before each of its slow steps, in order.
    steps = [
        "loading Keras and its backend",
        "loading digits",
        "data-dependent init on 500 training images",
        "training convpool_cnn_c (wn_mobn) on 1437 images, 1 device(s)",
        f"exporting and checking parity in {os.path.join(run_dir, 'export')}",
    ]
    lines = [line.removeprefix("keras-norms-train: ") for line in out.splitlines()]
    assert [line for line in lines if line in steps] == steps


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    run_dir = str(tmp_path / "run")
    args = ["--epochs", "2", "--output", run_dir] + FAST
    build = trainer.build_callbacks
    monkeypatch.setattr(trainer, "build_callbacks", lambda *a: build(*a) + [_Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        cli.main(args)
    assert os.path.isdir(os.path.join(run_dir, "backup"))
    monkeypatch.setattr(trainer, "build_callbacks", build)
    assert cli.main(args) == 0
    # Epoch 0 from the killed run, epoch 1 from the resumed one: not [0, 0, 1].
    assert _history_epochs(run_dir) == [0, 1]
    assert not os.path.exists(os.path.join(run_dir, "backup"))


class _Killed(BaseException):
    """A SIGKILL at that point: nothing after it runs, no handler catches it."""


class _EpochsRun(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_point, epochs_redone",
    [("writing the weights", [1]), ("between the renames", [])],
)
def test_a_run_killed_while_backing_up_resumes_from_a_whole_backup(
    kill_point, epochs_redone, tmp_path, monkeypatch
):
    """Killed in epoch 1's backup: the resumed run restores epoch 0's, or epoch 1's if it was
    written whole, and the log still has each epoch once."""
    run_dir = str(tmp_path / "run")
    args = ["--epochs", "2", "--output", run_dir] + FAST
    saves, save_weights, replace = [], keras.Model.save_weights, os.replace

    def killed_in_the_second_save(model, filepath, *a, **kw):
        saves.append(filepath)
        if len(saves) == 2 and kill_point == "writing the weights":
            with open(filepath, "wb") as f:
                f.write(b"\x89HDF\r\n\x1a\n")  # the first bytes of an HDF5 file
            raise _Killed
        return save_weights(model, filepath, *a, **kw)

    def killed_before_the_second_backup_is_in_place(source, destination):
        if len(saves) == 2 and destination == os.path.join(run_dir, "backup"):
            raise _Killed
        return replace(source, destination)

    monkeypatch.setattr(keras.Model, "save_weights", killed_in_the_second_save)
    monkeypatch.setattr(os, "replace", killed_before_the_second_backup_is_in_place)
    with pytest.raises(_Killed):
        cli.main(args)
    monkeypatch.undo()
    resumed = _EpochsRun()
    build = trainer.build_callbacks
    monkeypatch.setattr(trainer, "build_callbacks", lambda *a: build(*a) + [resumed])
    assert cli.main(args) == 0
    assert resumed.epochs == epochs_redone
    assert _history_epochs(run_dir) == [0, 1]
    assert sorted(os.listdir(run_dir)) == [
        "flags.json",
        "history.csv",
        "metrics.json",
        "model.keras",
    ]


def _train_on_mock_cifar10(run_dir, num_examples, *args):
    """One epoch on `num_examples` tfds mock CIFAR-10 images; the exit status."""
    with tfds.testing.mock_data(num_examples=num_examples):
        return cli.main(
            ["--dataset", "cifar10", "--epochs", "1", "--output", run_dir, "--verbose", "0", *args]
        )


@pytest.mark.slow
def test_tfds_dataset_trains_under_mock_data(tmp_path):
    run_dir = str(tmp_path / "run")
    assert _train_on_mock_cifar10(run_dir, 16, "--norm", "bn", "--batch-size", "8") == 0
    assert _metrics(run_dir)["dataset"] == "cifar10"


@pytest.mark.slow
def test_nin_trains_at_batch_size_one_with_global_data_normalization(tmp_path):
    run_dir = str(tmp_path / "run")
    status = _train_on_mock_cifar10(
        run_dir, 12, "--model", "nin", "--norm", "normprop", "--batch-size", "1"
    )
    assert status == 0
    assert _metrics(run_dir)["batch_size"] == 1
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    assert model.get_layer("global_data_normalization").axis == (1, 2, 3)


@pytest.mark.slow
def test_nin_on_digits_resizes_to_32_and_uses_the_papers_recipe(tmp_path):
    run_dir = str(tmp_path / "run")
    assert (
        cli.main(
            [
                "--model",
                "nin",
                "--norm",
                "bn",
                "--data-normalization",
                "batch",
                "--epochs",
                "1",
                "--train-examples",
                "200",
                "--width-multiplier",
                "0.25",
                "--output",
                run_dir,
                "--verbose",
                "0",
            ]
        )
        == 0
    )
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    assert model.input_shape == (None, 32, 32, 1)
    assert model.get_layer("conv1").filters == 192 // 4
    assert model.get_layer("batch_data_normalization") is not None
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    # Weight decay 5e-4 is a term of the loss (add_weight_decay), not the optimizer's.
    assert model.optimizer.momentum == 0.9 and model.optimizer.weight_decay is None
    assert _metrics(run_dir)["batch_size"] == 50


@pytest.mark.slow
def test_all_cnn_c_with_dwck_trains_under_mock_data(tmp_path):
    run_dir = str(tmp_path / "run")
    assert (
        _train_on_mock_cifar10(
            run_dir, 16, "--model", "all_cnn_c", "--norm", "dwck", "--batch-size", "8"
        )
        == 0
    )
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    assert model.layers[-1].get_layer("conv1_dwck").kernel_sizes == [(4, 4), (2, 2), (2, 2), (2, 2)]


@pytest.mark.slow
def test_resnet18_with_normalized_convolution_trains_at_batch_size_two(tmp_path):
    run_dir = str(tmp_path / "run")
    assert _train_on_mock_cifar10(run_dir, 8, "--model", "resnet18", "--norm", "nc") == 0
    metrics = _metrics(run_dir)
    assert metrics["batch_size"] == 2 and np.isfinite(metrics["test_loss"])


def test_missing_data_exits_2_with_instructions(tmp_path, capsys):
    status = cli.main(
        [
            "--dataset",
            "svhn_cropped",
            "--data-dir",
            str(tmp_path / "tfds"),
            "--no-download",
            "--output",
            str(tmp_path / "run"),
        ]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert "tfds build svhn_cropped --data_dir DIR" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--model", "vgg"],
            "invalid choice: 'vgg' (choose from all_cnn_c, convpool_cnn_c, efficientnet_b0, "
            "mobilenet_v2, nin, plain_cnn, resnet18, resnet50)",
        ),
        (
            ["--norm", "gn"],
            "invalid choice: 'gn' for --model convpool_cnn_c "
            "(choose from wn_mobn, none, wn, mobn, bn)",
        ),
        (
            ["--dataset", "mnist"],
            "invalid choice: 'mnist' (choose from digits, digits_hard, cifar10, cifar100, "
            "svhn_cropped)",
        ),
        (["--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
        (["--batch-size", "-4"], "argument --batch-size: expected a positive integer, got -4"),
        (["--learning-rate", "0"], "argument --learning-rate: expected a positive number, got 0"),
        (["--weight-decay", "-1"], "argument --weight-decay: expected a number >= 0, got -1"),
        (
            ["--decay-every", "3"],
            "argument --decay-every: the 'constant_then_linear' schedule has no steps",
        ),
        (["--depth", "3"], "argument --depth: --model convpool_cnn_c takes no --depth"),
        (
            ["--model", "plain_cnn", "--width-multiplier", "0.5"],
            "argument --width-multiplier: --model plain_cnn takes no --width-multiplier",
        ),
        (
            ["--width-multiplier", "0"],
            "argument --width-multiplier: expected a positive number, got 0",
        ),
        (
            ["--model", "plain_cnn", "--activation", "selu"],
            "argument --activation: --model plain_cnn takes no --activation",
        ),
        (
            ["--model", "nin", "--input-standardization", "component"],
            "argument --input-standardization: --model nin normalizes its input itself",
        ),
        (["--run-eagerly", "--jit-compile"], "argument --run-eagerly: not allowed with"),
        (["--devices", "2"], "argument --devices: only with --strategy data_parallel"),
        (
            ["--strategy", "data_parallel", "--no-jit-compile"],
            "argument --no-jit-compile: not allowed with --strategy data_parallel",
        ),
        (
            ["--strategy", "data_parallel", "--run-eagerly"],
            "argument --run-eagerly: not allowed with --strategy data_parallel",
        ),
    ],
)
def test_bad_arguments_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    # argparse quotes the choices in some Python versions only.
    assert message.replace("'", "") in capsys.readouterr().err.replace("'", "")


def test_help_lists_every_registered_builder_with_its_norms(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name, builder in BUILDERS.items():
        (line,) = [line for line in out.splitlines() if line.strip().startswith(f"{name}:")]
        assert f"--norm {builder.default_norm}|" in line
        assert all(norm in line for norm in builder.norms)
        assert f"batch {builder.recipe.batch_size}," in line


def test_help_shows_each_flags_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert re.search(r"--model \{[a-z0-9_,]*\} \(default: convpool_cnn_c\)", out)
    assert "--epochs EPOCHS (default: 30)" in out and "--seed SEED (default: 0)" in out
    assert "(default: digits)" in out and "(default: channel)" in out


def test_norm_defaults_to_the_models_default(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(trainer, "train", lambda args: seen.update(norm=args.norm))
    assert cli.main(["--model", "resnet18", "--output", str(tmp_path)]) == 0
    assert seen["norm"] == "bn"


# Flags that do not change what a run trains: a run may resume with others (--devices:
# the global batch stays the same).
NON_RUN_FLAGS = {
    "help",
    "devices",
    "data_dir",
    "download",
    "output",
    "export",
    "connect_timeout",
    "verbose",
    "run_eagerly",
}
# Other values for every flag of RUN_FLAGS than FAST and the defaults give.
OTHER_RUN_FLAGS = [
    "--model", "resnet18",
    "--dataset", "cifar10",
    "--split-seed", "1",
    "--image-size", "14",
    "--validation-examples", "10",
    "--train-examples", "50",
    "--epochs", "3",
    "--batch-size", "100",
    "--init-batch-size", "100",
    "--no-data-init",
    "--learning-rate", "0.01",
    "--test-examples", "20",
    "--optimizer", "sgd",
    "--schedule", "halving",
    "--decay-every", "2",
    "--weight-decay", "0.001",
    "--augment", "flip",
    "--kernel-initializer", "he_normal",
    "--width-multiplier", "0.5",
    "--activation", "selu",
    "--input-standardization", "component",
    "--track-hidden-inputs",
    "--log-every-steps", "5",
    "--data-normalization", "batch",
    "--bn-momentum", "0.5",
    "--recompute-statistics",
    "--seed", "1",
    "--strategy", "mirrored",
    "--mixed-precision",
    "--jit-compile",
]  # fmt: skip


def test_run_directory_refuses_a_run_with_other_flags(tmp_path, monkeypatch, capsys):
    """The run records its flags; a run with others is refused, listing each change."""
    assert {a.dest for a in cli.build_parser()._actions} == set(RUN_FLAGS) | NON_RUN_FLAGS
    monkeypatch.setattr(trainer, "_fit_and_report", lambda *args: {})  # the flags are recorded
    run_dir = str(tmp_path / "run")
    argv = ["--epochs", "2", "--output", run_dir] + FAST
    assert cli.main(argv) == 0
    with open(os.path.join(run_dir, "flags.json")) as f:
        assert json.load(f)["epochs"] == 2
    assert cli.main(argv + ["--verbose", "2", "--export", "--connect-timeout", "9"]) == 0
    assert cli.main(argv + OTHER_RUN_FLAGS) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"keras-norms-train: error: {run_dir!r} holds a run trained with other")
    assert len(err.splitlines()) == 1
    assert err.endswith("pick another --output, or delete that directory to start over")
    changes = err[err.index("(") + 1 : err.rindex(")")].split("; ")
    # resnet18 takes --activation, not plain_cnn's --depth.
    assert {change.split()[0] for change in changes} == {
        "--" + name.replace("_", "-") for name in RUN_FLAGS if name != "depth"
    }
    for change in ("--epochs was 2, now 3", "--norm was wn_mobn, now bn", "--seed was 0, now 1"):
        assert change in changes
    assert "--learning-rate was 0.003, now 0.01" in changes


def test_unwritable_output_directory_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    assert cli.main(["--output", str(blocker / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-norms-train: error: cannot write to output directory")
    assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_unreadable_checkpoint_is_a_one_line_error(tmp_path, capsys):
    run_dir = tmp_path / "run"
    backup = run_dir / "backup"
    backup.mkdir(parents=True)
    (backup / "latest.weights.h5").write_bytes(b"not an h5 file")
    (backup / "training_metadata.json").write_text("{broken")
    assert cli.main(["--epochs", "1", "--output", str(run_dir)] + FAST) == 1
    err = capsys.readouterr().err.strip()
    assert "cannot resume from the checkpoint in" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "command, expected",
    [
        ([sys.executable, "-m", "keras_norms.training"], "--init-batch-size"),
        (["keras-norms-train"], "--init-batch-size"),
        ([sys.executable, "-m", "keras_norms.export"], "--tolerance"),
        (["keras-norms-export"], "--tolerance"),
    ],
)
def test_entry_points_print_help(command, expected):
    if not os.path.isabs(command[0]):  # a console script: beside python, or on PATH
        beside = os.path.join(os.path.dirname(sys.executable), command[0])
        command = [beside if os.path.exists(beside) else shutil.which(command[0]) or command[0]]
    result = subprocess.run(command + ["--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert expected in result.stdout


def test_help_and_parsing_load_no_keras_and_no_backend():
    """`--help` and parsing a command line are quick: the trainer and Keras load in `run`."""
    code = (
        "import sys\n"
        "from keras_norms.training import cli\n"
        "config = cli.parse_args(['--model', 'nin', '--augment', 'flip', '--optimizer', 'adam'])\n"
        "assert config.data_normalization == 'global' and config.batch_size == 50\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--data-normalization {batch,global}" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "module, argv",
    [
        ("keras_norms.export.cli", ["--help"]),
        ("keras_norms.training.experiment_runner", ["--help"]),
        ("keras_norms.training.experiment_runner", ["--list"]),
    ],
)
def test_the_other_commands_help_and_list_load_no_keras(module, argv):
    code = (
        "import sys, importlib\n"
        f"main = importlib.import_module({module!r}).main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))"
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) > 5  # the help or the list was printed
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _train_command(*args):
    return [sys.executable, "-m", "keras_norms.training", "--verbose", "0", *args]


def _environment(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _tf_config(addresses, index):
    return json.dumps(
        {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    )


@pytest.mark.slow
def test_two_workers_train_one_epoch_to_identical_weights(tmp_path):
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    run_dir = str(tmp_path / "run")
    command = _train_command(
        "--strategy",
        "multi_worker",
        "--connect-timeout",
        "120",
        "--epochs",
        "1",
        "--image-size",
        "12",
        "--batch-size",
        "100",
        "--output",
        run_dir,
    )
    workers = [
        subprocess.Popen(
            command,
            env=_environment(TF_CONFIG=_tf_config(addresses, index)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(2)
    ]
    try:
        outputs = [worker.communicate(timeout=400)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    chief = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    other = keras.saving.load_model(os.path.join(run_dir, "worker1", "model.keras"))
    for a, b in zip(chief.weights, other.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert _metrics(run_dir)["replicas"] == 2
    assert _history_epochs(run_dir) == [0]


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{not json", "TF_CONFIG must be JSON with 'cluster' and 'task'"),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
            "task index 3 is not one of the 'worker' addresses",
        ),
    ],
)
def test_bad_tf_config_is_a_one_line_error(tf_config, message, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config is not None:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    argv = ["--strategy", "multi_worker", "--output", str(tmp_path / "run")] + FAST
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_unreachable_worker_exits_within_the_connect_timeout(tmp_path):
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    command = _train_command(
        "--strategy", "multi_worker", "--connect-timeout", "5", "--output", str(tmp_path / "run")
    )
    start = time.monotonic()
    result = subprocess.run(
        command,
        env=_environment(TF_CONFIG=_tf_config(addresses, 0)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL
    assert "did not come up within 5 s" in result.stderr
    assert time.monotonic() - start < 60


def _wait_for_epochs(run_dir, count, process, timeout=300):
    """Until `count` epochs are logged and their backup is written (a loaded machine lags)."""
    deadline = time.monotonic() + timeout
    path = os.path.join(run_dir, "history.csv")
    backup = os.path.join(run_dir, "backup")
    while time.monotonic() < deadline and process.poll() is None:
        if os.path.isfile(path) and len(_history_epochs(run_dir)) >= count:
            if os.path.isdir(backup):
                return
        time.sleep(0.05)
    raise AssertionError(f"no {count} epochs logged; status {process.poll()}")


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_and_matches_an_uninterrupted_run(tmp_path):
    """SIGKILL during epoch 2 of 4; the same command resumes after epoch 1."""
    args = ["--epochs", "4", "--image-size", "12", "--batch-size", "20"]
    killed_dir, clean_dir = str(tmp_path / "killed"), str(tmp_path / "clean")
    with open(tmp_path / "killed.err", "w+") as err:
        process = subprocess.Popen(
            _train_command(*args, "--output", killed_dir),
            env=_environment(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            _wait_for_epochs(killed_dir, 1, process)
            time.sleep(0.3)  # into the next epoch, or into the backup of the first
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
        except AssertionError as error:
            err.seek(0)
            raise AssertionError(f"{error}; its stderr:\n{err.read()[-3000:]}") from None
        finally:
            process.kill()
    done = len(_history_epochs(killed_dir))
    assert 1 <= done < 4 and os.path.isdir(os.path.join(killed_dir, "backup"))
    for run_dir in (killed_dir, clean_dir):
        result = subprocess.run(
            _train_command(*args, "--output", run_dir),
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{run_dir}: {result.stderr[-3000:]}"
    assert _history_epochs(killed_dir) == [0, 1, 2, 3]
    resumed, clean = _metrics(killed_dir), _metrics(clean_dir)
    assert abs(resumed["test_accuracy"] - clean["test_accuracy"]) <= 0.05, (resumed, clean)


@pytest.mark.slow
def test_mixed_precision_and_xla_run_exports_a_float32_model(tmp_path):
    run_dir = str(tmp_path / "run")
    argv = [
        "--epochs",
        "1",
        "--output",
        run_dir,
        "--export",
        "--mixed-precision",
        "--jit-compile",
        "--width-multiplier",
        "0.25",  # float16 convolutions are slow on CPUs
    ] + FAST
    assert cli.main(argv) == 0
    assert keras.config.dtype_policy().name == "float32"  # restored after the run
    metrics = _metrics(run_dir)
    assert metrics["mixed_precision"] == "mixed_float16" and metrics["jit_compile"] is True
    report = metrics["export"]
    assert report["saved_model_max_abs_diff"] <= 1e-4 and report["tflite_max_abs_diff"] <= 1e-4
    assert 0 < report["mixed_precision_max_abs_diff"] < 0.5
    assert is_mixed_precision(keras.saving.load_model(os.path.join(run_dir, "model.keras")))


def test_train_examples_keeps_the_first_n_training_examples(tmp_path, monkeypatch):
    seen = {}

    def fit_and_report(args, strategy, run_dir, splits):
        seen.update(x=len(splits.x_train), y=len(splits.y_train), test=len(splits.x_test))
        seen.update(splits=splits)
        return {}

    def run(*flags):
        seen.clear()
        output = str(tmp_path / "_".join(flags))
        assert cli.main([*flags, "--output", output] + FAST) == 0
        return seen.pop("splits")

    monkeypatch.setattr(trainer, "_fit_and_report", fit_and_report)
    run("--train-examples", "50")
    assert seen == {"x": 50, "y": 50, "test": 360}  # the test split stays whole
    run("--test-examples", "20", "--seed", "3")
    assert seen == {"x": 1437, "y": 1437, "test": 20}
    whole = run("--seed", "1", "--validation-examples", "0")
    assert whole.x_validation is None
    # The validation split: the last 100 of the training split, one split for every --seed.
    for seed in ("0", "5"):
        held = run("--validation-examples", "100", "--train-examples", "50", "--seed", seed)
        assert seen == {"x": 50, "y": 50, "test": 360}
        np.testing.assert_array_equal(held.x_validation, whole.x_train[-100:])
        np.testing.assert_array_equal(held.y_validation, whole.y_train[-100:])
        np.testing.assert_array_equal(held.x_train, whole.x_train[:50])
        np.testing.assert_array_equal(held.x_test, whole.x_test)
    other_split = run("--split-seed", "1", "--validation-examples", "0", "--seed", "1")
    assert not np.array_equal(other_split.x_test, whole.x_test)


def test_a_validation_split_that_leaves_no_training_example_is_refused(tmp_path, capsys):
    argv = ["--validation-examples", "1437", "--output", str(tmp_path / "run")] + FAST
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "keras-norms-train: error: a validation split of 1437 examples leaves no training "
        "example: the training split holds 1437"
    )


def _built_models(monkeypatch):
    """Every (model, network, preprocess) the CLI builds, in a list."""
    built, build_model = [], trainer.build_model
    monkeypatch.setattr(
        trainer, "build_model", lambda *a, **k: built.append(build_model(*a, **k)) or built[-1]
    )
    return built


def test_optimizer_schedule_and_weight_decay_flags_reach_the_training(tmp_path, monkeypatch):
    built = _built_models(monkeypatch)
    run_dir = str(tmp_path / "run")
    argv = ["--epochs", "2", "--train-examples", "20", "--optimizer", "rmsprop"]
    argv += ["--learning-rate", "0.008", "--schedule", "halving", "--decay-every", "1"]
    assert cli.main(argv + ["--weight-decay", "0.01", "--output", run_dir] + FAST) == 0
    ((model, _, _),) = built
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    # Halved after epoch 0: the second epoch ran at 0.004.
    assert float(model.optimizer.learning_rate) == pytest.approx(0.004)
    kernels = [v for v in model.trainable_variables if len(v.shape) >= 2]
    expected = 0.01 / 2 * sum(float(np.sum(keras.ops.convert_to_numpy(v) ** 2)) for v in kernels)
    assert sum(float(loss) for loss in model.losses) == pytest.approx(expected, rel=1e-5)


def test_builder_flags_and_input_standardization_reach_the_model(tmp_path, monkeypatch):
    built = _built_models(monkeypatch)
    argv = ["--model", "plain_cnn", "--depth", "3", "--kernel-initializer", "zeros"]
    argv += ["--input-standardization", "component", "--epochs", "1", "--train-examples", "20"]
    assert cli.main(argv + ["--output", str(tmp_path / "run")] + FAST) == 0
    ((model, net, preprocess),) = built
    convs = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 2  # and the logits' Dense
    # The zero kernels stay zero: no gradient reaches them through the zero logits' layer.
    assert all(not np.any(keras.ops.convert_to_numpy(c.kernel)) for c in convs)
    assert preprocess.axis == (1, 2, 3)  # per component: one statistic per pixel and channel


def test_a_builder_refusing_a_flags_value_is_a_one_line_error(tmp_path, capsys):
    argv = ["--kernel-initializer", "no_such_initializer", "--output", str(tmp_path / "run")]
    assert cli.main(argv + FAST) == 1
    err = capsys.readouterr().err
    assert err.startswith("keras-norms-train: error: ") and "no_such_initializer" in err
    assert len(err.strip().splitlines()) == 1


def test_track_hidden_inputs_logs_each_hidden_layer(tmp_path):
    run_dir = str(tmp_path / "run")
    argv = ["--epochs", "2", "--train-examples", "20", "--track-hidden-inputs"]
    assert cli.main(argv + ["--output", run_dir] + FAST) == 0
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in rows[0] if c.startswith("hidden_input_mean_")]
    # ConvPool-CNN-C's 10 weight layers (9 convolutions, the logits) but the first.
    assert len(columns) == 9
    assert all(np.isfinite(float(row[c])) for row in rows for c in columns)
    with open(os.path.join(run_dir, "metrics.json")) as f:
        before = json.load(f)["hidden_inputs_before_training"]
    assert set(before) == {c for c in rows[0] if c.startswith("hidden_input_")}
    assert all(float(rows[0][c]) != before[c] for c in columns)  # training moved them


def test_bn_momentum_and_recomputed_statistics(tmp_path):
    """Every BN gets the momentum; validation and test run on population statistics, the
    running averages' figures kept; model.keras holds the recomputed statistics."""
    run_dir = str(tmp_path / "run")
    argv = ["--norm", "bn", "--epochs", "2", "--train-examples", "64", "--bn-momentum", "0.5"]
    argv += ["--validation-examples", "40", "--recompute-statistics", "--log-every-steps", "1"]
    assert cli.main(argv + ["--output", run_dir] + FAST[:2] + ["--batch-size", "32"]) == 0
    metrics = _metrics(run_dir)
    for split in ("validation", "test"):
        for figure in ("accuracy", "loss"):
            assert f"{split}_{figure}_running_averages" in metrics
        assert metrics[f"{split}_loss"] != metrics[f"{split}_loss_running_averages"]
    with open(os.path.join(run_dir, "history.csv")) as f:
        assert all("val_accuracy" in row for row in csv.DictReader(f))
    with open(os.path.join(run_dir, "steps.csv")) as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [1, 2, 3, 4]
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    momenta = [layer.momentum for layer in precise_statistics.batch_normalizations(model)]
    assert len(momenta) > 1 and set(momenta) == {0.5}
    test = datasets.load_digits(12)
    loss = model.evaluate(test.x_test, test.y_test, batch_size=32, verbose=0)[0]
    assert loss == pytest.approx(metrics["test_loss"], rel=1e-4)


def test_without_batch_statistics_nothing_is_recomputed(tmp_path):
    run_dir = str(tmp_path / "run")
    argv = ["--norm", "wn", "--epochs", "1", "--train-examples", "64", "--recompute-statistics"]
    assert cli.main(argv + ["--output", run_dir] + FAST) == 0
    metrics = _metrics(run_dir)
    assert "test_accuracy" in metrics and "validation_accuracy" not in metrics
    assert not any(key.endswith("_running_averages") for key in metrics)


def test_bn_momentum_must_be_below_one(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--bn-momentum", "1.0"])
    assert "expected a momentum in [0, 1), got 1.0" in capsys.readouterr().err


def _uninitialized_warnings(record):
    return [w for w in record if "before its data-dependent init" in str(w.message)]


def test_no_data_init_skips_data_dependent_initialization(tmp_path, monkeypatch, recwarn):
    calls = []
    monkeypatch.setattr(trainer, "data_dependent_init", lambda model, x: calls.append(len(x)))
    argv = ["--norm", "wn", "--epochs", "1", "--train-examples", "40", "--init-batch-size", "30"]
    argv += ["--run-eagerly"] + FAST
    assert cli.main(argv + ["--output", str(tmp_path / "init")]) == 0
    assert calls == [30]
    assert _uninitialized_warnings(recwarn)  # the init was mocked away: the layers say so
    recwarn.clear()
    assert cli.main(argv + ["--no-data-init", "--output", str(tmp_path / "no_init")]) == 0
    assert calls == [30]
    assert not _uninitialized_warnings(recwarn)  # asked for: no warning
    assert _metrics(str(tmp_path / "no_init"))["num_classes"] == 10
