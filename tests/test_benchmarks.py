"""The benchmark scripts run end to end and their ratios are what their tables say.

Their figures are reported, not asserted: these tests check that each ratio
is the quotient of the measurements it is printed beside.
"""

import importlib.util
import math
import pathlib
import sys

import pytest

from keras_norms.models import BUILDERS

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
# The scripts import their shared `measure` module as a sibling, as `python3 benchmarks/x.py` does.
sys.path.insert(0, str(BENCHMARKS))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _printed_rows(out, first_cells):
    """The printed table rows (cells) whose first cell is in `first_cells`."""
    rows = [line.split() for line in out.splitlines() if line.split()]
    return {cells[0]: cells for cells in rows if cells[0] in first_cells}


@pytest.mark.parametrize("model, norms", [("nin", "normprop,bn"), ("all_cnn_c", "dwck,learned,bn")])
def test_train_step_benchmark_prints_the_ratios_of_its_medians(model, norms, capsys):
    argv = [
        "--model",
        model,
        "--norms",
        norms,
        "--rounds",
        "1",
        "--steps",
        "1",
        "--batch-size",
        "4",
    ]
    ratios = _load("train_step").main(argv)
    rows = _printed_rows(capsys.readouterr().out, set(ratios))
    for norm, ratio in ratios.items():
        assert math.isfinite(ratio) and ratio > 0
        milliseconds, printed_ratio = float(rows[norm][1]), float(rows[norm][2])
        baseline_ms = float(rows[norms.split(",")[-1]][1])
        assert printed_ratio == pytest.approx(ratio, abs=5e-4)
        # The printed milliseconds are rounded to 0.05 ms.
        rounding = 0.05 / milliseconds + 0.05 / baseline_ms
        assert ratio == pytest.approx(milliseconds / baseline_ms, rel=rounding + 1e-6)


def test_normalized_conv_benchmark_runs(capsys):
    medians, memory = _load("normalized_conv").main(["--rounds", "1", "--steps", "1"])
    assert set(medians) == set(memory) == {"fast", "im2col", "conv2d"}
    assert all(t > 0 for t in medians.values())
    assert "fast path vs im2col" in capsys.readouterr().out


def test_run_all_ratios_are_quotients_of_its_measurements(capsys):
    argv = ["--rounds", "1", "--steps", "1", "--repeats", "1", "--builders", "convpool_cnn_c"]
    argv += ["--wn-backends", "jax", "--wn-quick"]
    module = _load("run_all")
    report = module.main(argv)
    layers = {row["layer"]: row for row in report["layers"]}
    assert list(layers) == list(module.LAYERS)
    for row in layers.values():
        assert row["time_vs_bn"] == pytest.approx(
            row["ms_per_step"] / layers["conv2d+bn"]["ms_per_step"]
        )
        assert row["memory_vs_conv2d"] == pytest.approx(
            row["peak_mib"] / layers["conv2d"]["peak_mib"]
        )
    builders = {row["norm"]: row for row in report["builders"]}
    assert set(builders) == set(BUILDERS["convpool_cnn_c"].norms)
    for row in builders.values():
        expected = row["images_per_s"] / builders["bn"]["images_per_s"]
        assert row["throughput_vs_bn"] == pytest.approx(expected)
    exports = {row["norm"]: row for row in report["exports"]}
    for row in exports.values():
        assert row["tflite_ms"] > 0
        expected = row["tflite_ms"] / exports["none"]["tflite_ms"]
        assert row["tflite_vs_none_export"] == pytest.approx(expected)
    assert "Export: batch-1 TFLite latency" in capsys.readouterr().out
    assert {row["backend"] for row in report["weight_norm_backends"]} == {"jax"}
    for row in report["weight_norm_backends"]:
        assert row["ratio"] == pytest.approx(row["variant_ms"] / row["baseline_ms"])


def test_weight_norm_backends_ratios_are_quotients_of_its_printed_times(capsys):
    import keras

    module = _load("weight_norm_backends")
    backend = keras.backend.backend()
    rows = module.main(["--quick", "--backends", backend])
    assert {row["layer"] for row in rows} == set(module.LAYERS)
    printed = {}
    for line in capsys.readouterr().out.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] != backend:
            continue
        if len(cells) == len(module.MAIN_COLUMNS):  # backend, layer, plain, wn, ratio, iqr
            key, times = (cells[1], "wn", "plain"), cells[2:]
        else:  # backend, layer, variant, baseline, baseline ms, variant ms, ratio, iqr
            key, times = tuple(cells[1:4]), cells[4:]
        baseline_ms, variant_ms, ratio = (float(cell) for cell in times[:3])
        low, high = (float(q) for q in times[3].split("-"))
        printed[key] = baseline_ms, variant_ms, ratio, low, high
    assert set(printed) == {(r["layer"], r["variant"], r["baseline"]) for r in rows}
    for row in rows:
        baseline_ms, variant_ms, ratio, low, high = printed[
            row["layer"], row["variant"], row["baseline"]
        ]
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0 and low <= high
        assert row["ratio"] == pytest.approx(row["variant_ms"] / row["baseline_ms"])
        assert ratio == pytest.approx(row["ratio"], abs=5e-4)
        # The printed times are rounded to 0.0005 ms.
        rounding = 5e-4 / variant_ms + 5e-4 / baseline_ms + 5e-4 / ratio
        assert ratio == pytest.approx(variant_ms / baseline_ms, rel=rounding + 1e-6)
