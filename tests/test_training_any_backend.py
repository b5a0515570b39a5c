"""`keras-norms-train` on the offline digits under whichever Keras backend runs the tests.

.ci/run runs this module under TensorFlow, JAX and PyTorch.
"""

import json
import os

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
    assert f"--strategy {strategy} uses tf.distribute and needs the TensorFlow backend" in err


def test_augmentation_and_hidden_input_statistics_run_on_this_backend(tmp_path):
    """`--augment` goes through ArrayBatches off TensorFlow; the callback logs every epoch."""
    run_dir = str(tmp_path / "run")
    argv = ["--epochs", "2", "--image-size", "12", "--batch-size", "100", "--verbose", "0"]
    argv += ["--train-examples", "200", "--augment", "flip_shift", "--track-hidden-inputs"]
    assert cli.main(argv + ["--output", run_dir]) == 0
    with open(os.path.join(run_dir, "history.csv")) as f:
        header, *rows = f.read().splitlines()
    assert len(rows) == 2 and "hidden_input_mean_9" in header.split(",")
