"""`keras-norms-train` on the offline digits under whichever Keras backend runs the tests.

.ci/run runs this module under TensorFlow, JAX and PyTorch.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_norms.training import cli


def test_one_epoch_on_the_digits_writes_a_loadable_model(tmp_path):
    run_dir = str(tmp_path / "run")
    argv = ["--epochs", "1", "--image-size", "12", "--batch-size", "200", "--verbose", "0"]
    assert cli.main(argv + ["--output", run_dir]) == 0
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["norm"] == "wn_mobn" and metrics["replicas"] == 1
    # Keras' own choice by default: XLA on JAX (op by op it ran before), not on TF's CPU or torch.
    assert metrics["jit_compile"] == (keras.backend.backend() == "jax")
    assert np.isfinite(metrics["test_loss"]) and 0.0 <= metrics["test_accuracy"] <= 1.0
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    assert model.input_shape == (None, 12, 12, 1)


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="tf.distribute works here")
@pytest.mark.parametrize("strategy", ["mirrored", "multi_worker"])
def test_tf_distribute_off_tensorflow_is_a_one_line_error(strategy, tmp_path, capsys):
    assert cli.main(["--strategy", strategy, "--output", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"--strategy {strategy} uses tf.distribute and needs the tensorflow backend" in err


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="keras.distribution works here")
def test_data_parallel_off_jax_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["--strategy", "data_parallel", "--output", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--strategy data_parallel uses keras.distribution and needs the jax backend" in err


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution runs on JAX")
def test_data_parallel_on_two_devices_equals_one_device(tmp_path):
    """`keras.distribution.DataParallel` on 2 virtual CPU devices against one device
    (tests/data_parallel_runs.py): each of our layers in one model, and the CLI's
    `--strategy data_parallel` with a padded last evaluation batch."""
    script = os.path.join(os.path.dirname(__file__), "data_parallel_runs.py")
    environment = dict(
        os.environ, KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"
    )
    result = subprocess.run(
        [sys.executable, script, str(tmp_path)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    differences = json.loads(result.stdout.strip().splitlines()[-1])
    layers, run = differences["layers"], differences["cli"]
    assert layers["steps"] == 4 and run["replicas"] == 2
    assert layers["losses"] < 1e-5 and layers["after_fit"] < 1e-5
    assert layers["after_data_init"] < 1e-5  # the whole init batch's statistics
    assert {"test_loss", "test_accuracy", "validation_accuracy"} <= set(run["figures"])
    assert run["metrics"] < 1e-5 and run["weights"] < 1e-5


def test_augmentation_and_hidden_input_statistics_run_on_this_backend(tmp_path):
    """`--augment` goes through ArrayBatches off TensorFlow; the callback logs every epoch."""
    run_dir = str(tmp_path / "run")
    argv = ["--epochs", "2", "--image-size", "12", "--batch-size", "100", "--verbose", "0"]
    argv += ["--train-examples", "200", "--augment", "flip_shift", "--track-hidden-inputs"]
    assert cli.main(argv + ["--output", run_dir]) == 0
    with open(os.path.join(run_dir, "history.csv")) as f:
        header, *rows = f.read().splitlines()
    assert len(rows) == 2 and "hidden_input_mean_9" in header.split(",")
