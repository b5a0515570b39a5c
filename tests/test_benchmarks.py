"""The benchmark script runs end to end (its figures are reported, not asserted)."""

import importlib.util
import pathlib
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "train_step.py"
# The scripts import their shared `measure` module as a sibling, as `python3 benchmarks/x.py` does.
sys.path.insert(0, str(SCRIPT.parent))


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


def test_run_all_prints_one_report(capsys):
    path = SCRIPT.parent / "run_all.py"
    spec = importlib.util.spec_from_file_location("run_all", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--rounds", "1", "--steps", "1", "--repeats", "1", "--builders", "convpool_cnn_c"]
    report = module.main(argv)
    assert [row["layer"] for row in report["layers"]] == list(module.LAYERS)
    assert {row["norm"] for row in report["builders"]} == {"none", "wn", "mobn", "bn", "wn_mobn"}
    assert all(row["tflite_ms"] > 0 for row in report["exports"])
    none = next(row for row in report["exports"] if row["norm"] == "none")
    assert none["tflite_vs_none_export"] == 1.0
    assert "Export: batch-1 TFLite latency" in capsys.readouterr().out
