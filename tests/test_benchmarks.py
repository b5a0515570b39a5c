"""The benchmark scripts run end to end (their figures are reported, not asserted)."""

import importlib.util
import pathlib

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_normprop_vs_bn_runs(capsys):
    ratio = _load("normprop_vs_bn").main(["--rounds", "1", "--steps", "1", "--batch-size", "4"])
    assert ratio > 0
    assert "ratio NormProp / BN" in capsys.readouterr().out
