"""The benchmark script runs end to end (its figures are reported, not asserted)."""

import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "train_step.py"


@pytest.mark.parametrize("model, norms", [("nin", "normprop,bn"), ("all_cnn_c", "dwck,learned,bn")])
def test_train_step_benchmark_runs(model, norms, capsys):
    spec = importlib.util.spec_from_file_location("train_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ratios = module.main(["--model", model, "--norms", norms, "--rounds", "1", "--steps", "1", "--batch-size", "4"])
    assert set(ratios) == set(norms.split(",")) and ratios["bn"] == 1.0
    assert "ratio to bn" in capsys.readouterr().out


def test_normalized_conv_benchmark_runs(capsys):
    path = SCRIPT.parent / "normalized_conv.py"
    spec = importlib.util.spec_from_file_location("normalized_conv", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    medians, memory = module.main(["--rounds", "1", "--steps", "1"])
    assert set(medians) == set(memory) == {"fast", "im2col", "conv2d"}
    assert "fast path vs im2col" in capsys.readouterr().out
