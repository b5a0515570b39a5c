"""The benchmark scripts run end to end and their ratios are what their tables say.

Their figures are reported, not asserted: these tests check that each ratio
is the quotient of the times (or memory) that were measured, fed to the
sections in place of a measurement (or the median of the per-round ratios,
with its quartiles), that the printed tables are the report, the timing
machinery on a fake clock, and the op counts that tell an export that folds
away from one that does not.
"""

import dataclasses
import importlib.util
import math
import pathlib
import statistics
import sys
import types

import numpy as np
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


def test_run_all_prints_the_report_of_the_sections_it_names(capsys):
    import keras

    # The backend this suite runs on: README's test command installs no other.
    backend = keras.backend.backend()
    argv = ["--sections", "layers,builders,wn_backends", "--rounds", "1", "--steps", "1"]
    argv += ["--builders", "convpool_cnn_c", "--wn-backends", backend, "--wn-quick"]
    module = _load("run_all")
    report = module.main(argv)
    assert set(report) == {"machine", "sections", "layers", "builders", "weight_norm_backends"}
    assert [row["layer"] for row in report["layers"]] == list(_load("layer_steps").LAYERS)
    assert [row["norm"] for row in report["builders"]] == list(BUILDERS["convpool_cnn_c"].norms)
    for row in report["layers"] + report["builders"]:
        ratios = [value for key, value in row.items() if "_vs_" in key]
        assert all(math.isfinite(ratio) and ratio > 0 for ratio in ratios)
    out = capsys.readouterr().out
    for title, rows, columns in (
        ("Layers: training step", report["layers"], module.LAYER_COLUMNS),
        ("Builders: training throughput", report["builders"], module.BUILDER_COLUMNS),
    ):
        printed = _markdown_rows(out, title)
        assert printed == [[module._cell(row, column) for column in columns] for row in rows]
    assert "Export:" not in out and "Applications:" not in out
    assert {row["backend"] for row in report["weight_norm_backends"]} == {backend}


def test_run_all_xla_section_measures_each_norm_with_and_without_xla(capsys, monkeypatch):
    """One builder's norms on this suite's backend: the speedup is the quotient of the two
    runs' times, each the first step plus the other steps at the median."""
    import keras

    module = _load("run_all")
    xla_steps = _load("xla_steps")
    monkeypatch.setattr(xla_steps, "BACKENDS", (keras.backend.backend(),))
    norms = ("none", "wn")  # two of its five: time
    builder = dataclasses.replace(BUILDERS["convpool_cnn_c"], norms=norms)
    monkeypatch.setitem(xla_steps.BUILDERS, "convpool_cnn_c", builder)
    argv = ["--sections", "xla", "--rounds", "1", "--steps", "1", "--builders", "convpool_cnn_c"]
    argv += ["--xla-backends", keras.backend.backend()]
    rows = module.main(argv)["xla"]
    assert [(row["backend"], row["norm"]) for row in rows] == [
        (keras.backend.backend(), norm) for norm in norms
    ]
    steps = xla_steps.TYPICAL_STEPS
    for row in rows:
        for kind in ("plain", "xla"):
            run = row[f"first_step_s_{kind}"] + (steps - 1) * row[f"ms_per_step_{kind}"] / 1000
            assert math.isclose(row[f"run_s_{kind}"], run, rel_tol=1e-9)
        assert math.isclose(row["xla_speedup"], row["run_s_plain"] / row["run_s_xla"])
    printed = _markdown_rows(capsys.readouterr().out, "XLA: each builder")
    assert printed == [[module._cell(row, column) for column in module.XLA_COLUMNS] for row in rows]


def _fake_measurements(names, first=3):
    """Distinct primes (from `first`) / 1024 for `names`: quotients of other pairs differ.

    A quotient of two of them equals another only for the same pair (or
    both 1): a ratio of the wrong figures cannot pass for the right one.
    """
    primes = [p for p in range(first, 200) if all(p % d for d in range(2, p))]
    return {name: prime / 1024 for name, prime in zip(names, primes)}


def test_layer_table_ratios_are_quotients_of_the_measured_times_and_memory(monkeypatch):
    layer_steps = _load("layer_steps")
    times = _fake_measurements(layer_steps.LAYERS)
    memory = {name: 1024 * t for name, t in _fake_measurements(layer_steps.LAYERS, 59).items()}
    timed = []

    def median_step_times(models, batch, rounds, steps):
        assert (rounds, steps) == (3, 2)
        assert batch[0].shape == layer_steps.LAYER_SHAPE
        timed.append(models)
        return dict(times)

    def in_fresh_process(module, function, name):
        # The function a fresh process runs exists where it is named.
        assert getattr(_load(module), function) is not None
        return memory[name]

    monkeypatch.setattr(layer_steps, "median_step_times", median_step_times)
    monkeypatch.setattr(layer_steps, "in_fresh_process", in_fresh_process)
    rows = layer_steps.layer_table(rounds=3, steps=2)
    (models,) = timed
    assert list(models) == [row["layer"] for row in rows] == list(layer_steps.LAYERS)
    assert len({id(model) for model in models.values()}) == len(models)
    for row in rows:
        name = row["layer"]
        assert row["ms_per_step"] == pytest.approx(1000 * times[name])
        assert row["time_vs_conv2d"] == pytest.approx(times[name] / times["conv2d"])
        assert row["time_vs_bn"] == pytest.approx(times[name] / times["conv2d+bn"])
        assert row["peak_mib"] == memory[name]
        assert row["memory_vs_conv2d"] == pytest.approx(memory[name] / memory["conv2d"])
        assert row["memory_vs_bn"] == pytest.approx(memory[name] / memory["conv2d+bn"])


def test_builder_table_ratios_are_quotients_of_the_measured_times(monkeypatch):
    builder_throughput = _load("builder_throughput")
    norms = BUILDERS["convpool_cnn_c"].norms
    times = _fake_measurements(norms)
    batch = builder_throughput.BUILDER_BATCH

    def median_step_times(models, batch_, rounds, steps):
        assert list(models) == list(norms) and (rounds, steps) == (3, 2)
        assert batch_[0].shape == (batch,) + builder_throughput.builder_input("convpool_cnn_c")
        return dict(times)

    monkeypatch.setattr(builder_throughput, "median_step_times", median_step_times)
    rows = builder_throughput.builder_table(["convpool_cnn_c"], rounds=3, steps=2)
    assert [(row["builder"], row["norm"]) for row in rows] == [
        ("convpool_cnn_c", norm) for norm in norms
    ]
    for row in rows:
        assert row["images_per_s"] == pytest.approx(batch / times[row["norm"]])
        assert row["throughput_vs_bn"] == pytest.approx(times["bn"] / times[row["norm"]])


def _markdown_rows(out, title):
    """The cells of the rows of the markdown table printed under the line starting `title`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 3 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _ratio_cell(cell):
    """`"1.003 (0.991-1.012)"` -> `(1.003, 0.991, 1.012)`."""
    ratio, spread = cell.split(" (")
    low, high = spread.rstrip(")").split("-")
    return float(ratio), float(low), float(high)


def test_run_all_export_section_alone_with_its_repeat_check(capsys):
    """Ratios are medians of per-round ratios; every ConvPool-CNN-C norm folds to `none`'s ops."""
    argv = ["--sections", "export", "--builders", "convpool_cnn_c", "--export-rounds", "2"]
    argv += ["--export-processes", "2", "--export-block-ms", "1", "--repeat-check"]
    module = _load("run_all")
    report = module.main(argv)
    assert set(report) == {
        "machine",
        "sections",
        "exports",
        "export_second_run",
        "export_repeat_check",
    }
    out = capsys.readouterr().out
    printed = {row[1]: row for row in _markdown_rows(out, "Export: batch-1 latency")}
    norms = BUILDERS["convpool_cnn_c"].norms
    for run in (report["exports"], report["export_second_run"]):
        assert [row["norm"] for row in run] == list(norms)
        for row in run:
            assert row["tflite_ms"] > 0 and row["onnx_ms"] > 0 and row["keras_ms"] > 0
            for runtime in ("tflite", "onnx"):
                key = f"{runtime}_vs_none_export"
                rounds = row[key + "_rounds"]
                assert len(rounds) == 2 * 2  # two processes' rounds, pooled
                assert row[key] == statistics.median(rounds)
                assert row[key + "_q1"] <= row[key] <= row[key + "_q3"]
                if row["norm"] == "none":
                    assert rounds == [1.0] * 4
                # WN, mean-only BN and BN all fold into the `none` model's graph.
                assert row[f"{runtime}_ops_vs_none"] == "identical"
    columns = module.EXPORT_COLUMNS
    for row in report["exports"]:
        cells = dict(zip(columns, printed[row["norm"]]))
        for runtime in ("tflite", "onnx"):
            key = f"{runtime}_vs_none_export"
            ratio, low, high = _ratio_cell(cells[key])
            assert ratio == pytest.approx(row[key], abs=5e-4)
            assert (low, high) == pytest.approx((row[key + "_q1"], row[key + "_q3"]), abs=5e-4)
            assert cells[f"{runtime}_ops_vs_none"] == "identical"
    assert "tflite: 4 folded exports" in out and "onnx: 4 folded exports" in out
    check = report["export_repeat_check"]
    assert len(check) == 2 * (len(norms) - 1)
    second = {row["norm"]: row for row in report["export_second_run"]}
    for row in check:
        key = f"{row['runtime']}_vs_none_export"
        assert row["run2"] == second[row["norm"]][key]
        assert row["difference"] == pytest.approx(row["run2"] / row["run1"] - 1)
    printed_check = _markdown_rows(out, "Export repeat check")
    assert len(printed_check) == len(check)
    for cells, row in zip(printed_check, check):
        assert float(cells[-1].rstrip(" %")) == pytest.approx(100 * row["difference"], abs=0.05)
    agree = all(row["agree"] for row in check)
    assert ("the two runs agree within 3 %" in out) == agree
    assert ("the two runs do NOT agree within 3 %" in out) == (not agree)


def test_ratio_summary_takes_the_median_of_the_per_round_ratios():
    measure = _load("measure")
    baseline = [1.0, 2.0, 4.0, 8.0, 16.0]
    per_round_ratios = [1.1, 1.0, 1.2, 0.9, 1.05]
    variant = [b * r for b, r in zip(baseline, per_round_ratios)]
    summary = measure.ratio_summary(variant, baseline)
    assert summary["rounds"] == pytest.approx(per_round_ratios)
    # Not the ratio of the medians (4.8 / 4 = 1.2): a round's two times share its machine.
    assert summary["ratio"] == pytest.approx(1.05)
    assert (summary["q1"], summary["q3"]) == pytest.approx((1.0, 1.1))
    one = measure.ratio_summary([3.0], [2.0])
    assert one["ratio"] == one["q1"] == one["q3"] == 1.5
    with pytest.raises(ValueError, match="same rounds"):
        measure.ratio_summary([1.0, 2.0], [1.0])


class _FakeClock:
    """A clock that only the fake runs move: timings in tests without timing anything.

    The fake durations are multiples of 1/1024 s, so its sums are exact.
    """

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_calibrated_calls_fills_the_target_time():
    measure = _load("measure")
    clock = _FakeClock()
    calls = []

    def run(seconds=2 / 1024):
        calls.append(seconds)
        clock.now += seconds

    assert measure.calibrated_calls(run, 30 / 1024, warmup=3, clock=clock) == 15
    # 3 warm-up calls, then timed calls until they add up to the target.
    assert len(calls) == 3 + 15
    assert measure.calibrated_calls(lambda: run(0.5), 30 / 1024, min_calls=3, clock=clock) == 3
    tiny = 1 / 2**20
    assert measure.calibrated_calls(lambda: run(tiny), 30 / 1024, max_calls=50, clock=clock) == 50


def test_interleaved_rounds_shuffle_the_order_keep_groups_adjacent_and_take_medians():
    measure = _load("measure")
    clock = _FakeClock()
    seconds = {"tflite/none": 1 / 1024, "tflite/bn": 2 / 1024, "onnx/none": 3 / 1024}
    seconds["onnx/bn"] = 4 / 1024
    log = []

    def make_run(name):
        def run():
            log.append(name)
            # Every 4th call loses its core for 50 ms: a round's fastest call ignores it.
            count = log.count(name)
            clock.now += seconds[name] + (50 / 1024 if count % 4 == 0 else 0.0)

        return run

    runs = {name: make_run(name) for name in seconds}
    calls = {"tflite/none": 5, "tflite/bn": 7, "onnx/none": 5, "onnx/bn": 5}
    rounds = 12
    per_round = measure.interleaved_rounds(
        runs, rounds, calls, group=lambda name: name.split("/")[0], seed=3, clock=clock
    )
    assert per_round == {name: [s] * rounds for name, s in seconds.items()}
    for name in runs:
        assert log.count(name) == rounds * (1 + calls[name])
    # Each round: the runs one after the other, each a block of a warm-up call and its calls.
    blocks, i = [], 0
    while i < len(log):
        name = log[i]
        block = log[i : i + 1 + calls[name]]
        assert block == [name] * (1 + calls[name])
        blocks.append(name)
        i += len(block)
    orders = [tuple(blocks[i : i + 4]) for i in range(0, len(blocks), 4)]
    assert len(orders) == rounds
    for order in orders:
        assert sorted(order) == sorted(runs)
        groups = [name.split("/")[0] for name in order]
        assert groups[0] == groups[1] and groups[2] == groups[3]
    # Shuffled: every run comes first in some round.
    assert {order[0] for order in orders} == set(runs)


def test_interleaved_rounds_make_fresh_runs_every_round():
    measure = _load("measure")
    clock = _FakeClock()
    made = []
    log = []

    def maker(name):
        def make():
            instance = len(made)
            made.append(name)

            def run():
                log.append((name, instance))
                clock.now += 1 / 1024

            return run

        return make

    runs = {name: maker(name) for name in ("a", "b", "c")}
    per_round = measure.interleaved_rounds(
        runs, 5, dict.fromkeys(runs, 3), seed=0, warmup=2, fresh=True, clock=clock
    )
    assert per_round == {name: [1 / 1024] * 5 for name in runs}
    # Each round makes each run once, in the round's order, and calls only those.
    assert sorted(made) == sorted(list(runs) * 5)
    blocks = [log[i : i + 5] for i in range(0, len(log), 5)]
    assert len(blocks) == 15
    for r in range(5):
        instances = set()
        for block in blocks[3 * r : 3 * r + 3]:
            (instance,) = {i for _, i in block}
            instances.add(instance)
            assert made[instance] == block[0][0]
        assert instances == set(range(3 * r, 3 * r + 3))


def test_op_count_difference_lists_additions_then_removals():
    module = _load("export_latency")
    none = {"Conv": 9, "LeakyRelu": 9, "MatMul": 1}
    assert module.op_count_difference(dict(none), none) == "identical"
    assert module.op_count_difference({**none, "Conv": 8, "Mul": 8, "Add": 8}, none) == (
        "+Add x8 +Mul x8 -Conv x1"
    )
    assert module.op_count_difference({"Conv": 9, "LeakyRelu": 9}, none) == "-MatMul x1"


def _export_row(builder, norm, tflite, onnx, tflite_ops="identical", onnx_ops="identical"):
    row = {"builder": builder, "norm": norm}
    for runtime, ratio, ops in (("tflite", tflite, tflite_ops), ("onnx", onnx, onnx_ops)):
        key = f"{runtime}_vs_none_export"
        row.update({key: ratio, key + "_q1": ratio - 0.01, key + "_q3": ratio + 0.01})
        row[f"{runtime}_ops_vs_none"] = ops
    return row


def test_export_goal_lines_judge_only_the_exports_that_fold():
    module = _load("export_latency")
    rows = [
        _export_row("resnet18", "none", 1.0, 1.0),
        _export_row("resnet18", "bn", 1.02, 1.07),
        _export_row("resnet18", "gn", 1.29, 1.31, "+MEAN x16", "+ReduceMean x16"),
    ]
    tflite, onnx = module.export_goal_lines(rows)
    assert tflite.startswith("tflite: 1 folded exports")
    assert ", met; largest 1.020x (resnet18 bn)" in tflite
    assert "not folded: resnet18 gn 1.290x" in tflite
    assert "NOT met by resnet18 bn 1.070x" in onnx


def test_repeat_check_compares_the_two_runs_ratios():
    module = _load("export_latency")
    first = [_export_row("nin", "none", 1.0, 1.0), _export_row("nin", "bn", 1.00, 1.02)]
    second = [_export_row("nin", "none", 1.0, 1.0), _export_row("nin", "bn", 1.02, 0.98)]
    check = module.repeat_check(first, second, tolerance=0.03)
    tflite, onnx = check
    assert (tflite["runtime"], tflite["run1"], tflite["run2"]) == ("tflite", 1.0, 1.02)
    assert tflite["difference"] == pytest.approx(0.02) and tflite["agree"]
    assert onnx["difference"] == pytest.approx(0.98 / 1.02 - 1) and not onnx["agree"]
    assert module.repeat_check_line(check, tolerance=0.03) == (
        "Largest difference 3.9 % (nin bn, onnx): the two runs do NOT agree within 3 %"
    )
    assert module.repeat_check_line([]) is None
    run_all = _load("run_all")
    assert run_all._cell(tflite, "run2") == "1.020 (1.010-1.030)"
    assert run_all._cell(onnx, "difference") == "-3.9 %"


def test_export_runners_and_op_counts(tmp_path):
    """One thread each; op counts tell a folded BN (identical) from a GroupNormalization."""
    import keras

    from keras_norms.export.exporter import (
        convert_tflite,
        export_onnx,
        export_saved_model,
        onnx_op_counts,
        onnx_runner,
        run_onnx,
        run_tflite,
        tflite_op_counts,
        tflite_runner,
    )
    from keras_norms.folding import fold

    x = np.random.default_rng(0).normal(size=(1, 8, 8, 1)).astype("float32")

    def exported(name, *norm_layers):
        keras.utils.set_random_seed(0)
        conv = keras.layers.Conv2D(4, 3, use_bias=not norm_layers)
        model = keras.Sequential([keras.Input((8, 8, 1)), conv, *norm_layers])
        folded = fold(model)
        folded(x)
        saved = export_saved_model(folded, str(tmp_path / name))
        tflite = convert_tflite(saved, str(tmp_path / f"{name}.tflite"))
        return model, tflite, export_onnx(folded, str(tmp_path / f"{name}.onnx"))

    _, none_tflite, none_onnx = exported("none")
    _, bn_tflite, bn_onnx = exported("bn", keras.layers.BatchNormalization())
    gn_model, gn_tflite, gn_onnx = exported("gn", keras.layers.GroupNormalization(2))
    difference = _load("export_latency").op_count_difference
    assert tflite_op_counts(none_tflite)["CONV_2D"] == 1
    assert difference(tflite_op_counts(bn_tflite), tflite_op_counts(none_tflite)) == "identical"
    assert difference(onnx_op_counts(bn_onnx), onnx_op_counts(none_onnx)) == "identical"
    assert difference(tflite_op_counts(gn_tflite), tflite_op_counts(none_tflite)) != "identical"
    assert difference(onnx_op_counts(gn_onnx), onnx_op_counts(none_onnx)).startswith("+")
    (onnx_out,) = onnx_runner(gn_onnx, x, threads=1)()
    np.testing.assert_allclose(onnx_out, run_onnx(gn_onnx, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(onnx_out, gn_model(x), rtol=1e-4, atol=1e-5)
    assert tflite_runner(gn_tflite, x, threads=1)() is None
    np.testing.assert_allclose(run_tflite(gn_tflite, x), gn_model(x), rtol=1e-4, atol=1e-5)


def _tiny_application():
    import keras

    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def _fake_replace(model, target):
    """A stand-in for `keras_norms.replace_normalization`: GN for "gn", refuses "nc"."""
    import keras

    if target == "nc":
        raise ValueError("Normalized Convolution needs a convolution before each norm.")
    layers = [
        keras.layers.GroupNormalization(2)
        if isinstance(layer, keras.layers.BatchNormalization)
        else layer.__class__.from_config(layer.get_config())
        for layer in model.layers
    ]
    new_model = keras.Sequential([keras.Input(model.input_shape[1:]), *layers])
    return new_model, types.SimpleNamespace(replaced=("bn",), refused=())


def test_applications_table_ratios_and_skipped_targets():
    module = _load("application_throughput")
    rows = module.applications_table(
        rounds=3,
        steps=1,
        batch=4,
        applications={"tiny": _tiny_application},
        targets=("gn", "nc"),
        replace=_fake_replace,
        block_ms=1,
    )
    by_norm = {row["norm"]: row for row in rows}
    assert list(by_norm) == ["bn", "gn", "nc"]
    assert by_norm["bn"]["throughput_vs_bn_rounds"] == [1.0, 1.0, 1.0]
    gn = by_norm["gn"]
    assert gn["images_per_s"] > 0 and gn["skipped"] == "" and gn["replaced"] == "1/1"
    assert len(gn["throughput_vs_bn_rounds"]) == 3
    assert gn["throughput_vs_bn"] == statistics.median(gn["throughput_vs_bn_rounds"])
    assert gn["throughput_vs_bn_q1"] <= gn["throughput_vs_bn"] <= gn["throughput_vs_bn_q3"]
    assert by_norm["nc"]["skipped"].startswith("Normalized Convolution needs")
    assert math.isnan(by_norm["nc"]["throughput_vs_bn"])


@pytest.mark.parametrize(
    "script, argv",
    [
        ("weight_norm_backends", ["--quick", "--backends", "tensorflow,jax"]),
        ("run_all", ["--sections", "layers,wn_backends", "--wn-backends", "tensorflow,jax"]),
    ],
)
def test_a_backend_not_installed_is_named_with_its_extra_before_measuring(
    script, argv, monkeypatch, capsys
):
    module = _load(script)
    installed = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jax" else installed(name, *a)
    )
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert "backends: jax is not installed" in err and "keras-norms[backends]" in err
    assert "Layers:" not in out  # refused before measuring


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


def test_weight_norm_backends_rows_pool_the_processes_measurements():
    """Known step times from two processes: medians, their quotient and the quartiles of the
    per-round ratios, computed here with numpy, not from the row's own figures."""
    module = _load("weight_norm_backends")
    first = {"wn": [0.011, 0.013, 0.012], "plain": [0.010, 0.010, 0.011]}
    second = {"wn": [0.017, 0.019], "plain": [0.013, 0.014]}
    rounds = [{"wn": [0.012, 0.013], "plain": [0.010, 0.011]}, {"wn": [0.018], "plain": [0.014]}]
    measured = [
        {"layer": "dense", "jit_compile": False, "pairs": [["wn", "plain"]], "every": every,
         "per_round": per_round}
        for every, per_round in zip((first, second), rounds)
    ]  # fmt: skip
    (row,) = module._pooled_rows("jax", measured)
    wn, plain = first["wn"] + second["wn"], first["plain"] + second["plain"]
    assert row["variant_ms"] == pytest.approx(1000 * np.median(wn))
    assert row["baseline_ms"] == pytest.approx(1000 * np.median(plain))
    assert row["ratio"] == pytest.approx(np.median(wn) / np.median(plain))
    ratios = np.array([0.012 / 0.010, 0.013 / 0.011, 0.018 / 0.014])
    assert (row["ratio_q1"], row["ratio_q3"]) == pytest.approx(
        tuple(np.quantile(ratios, [0.25, 0.75]))
    )
    assert (row["steps"], row["processes"], row["backend"]) == (5, 2, "jax")
