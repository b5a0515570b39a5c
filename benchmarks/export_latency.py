"""The `export` section of `run_all.py`: batch-1 latency and op counts of folded exports.

Every norm of each builder is built as in `builder_throughput.py` (seed 0),
given trained-like parameters (`trained_like`), folded and exported
(SavedModel, TFLite, ONNX; `export_files`). Its TFLite file
(`ai_edge_litert`), ONNX file (onnxruntime) and Keras model are timed on
one image in fresh processes (`measure_export_latency`, `export_latency`):
a ratio is the median over rounds of the ratio of two exports' times in the
same round (`export_rows`), beside whether the export's op counts equal the
`none` export's (`op_count_difference`). `export_goal_lines` judges the goal
(`EXPORT_GOAL`), `repeat_check` compares two runs (`REPEAT_TOLERANCE`).
"""

import functools
import os
import statistics
import time

import keras
import numpy as np
import weight_norm_backends
from builder_throughput import builder_batch, inference_model

from keras_norms.export.exporter import (
    convert_tflite,
    export_onnx,
    export_saved_model,
    onnx_op_counts,
    onnx_runner,
    tflite_op_counts,
    tflite_runner,
)
from keras_norms.folding import fold
from keras_norms.models import BUILDERS

from measure import calibrated_calls, in_fresh_process, interleaved_rounds, ratio_summary

# The runtimes timed, the goal for a norm that folds away and the agreement asked of two runs
# (`--repeat-check`).
EXPORT_RUNTIMES = ("tflite", "onnx", "keras")
EXPORT_GOAL = 1.05
REPEAT_TOLERANCE = 0.03


def trained_like(model, seed=0):
    """`model`, each float parameter that is constant at initialization given random values.

    Biases, BN's `gamma`, `beta` and moving statistics and the like start as
    zeros or ones; a converter drops an `x + 0` or `x * 1` that a trained
    model would keep, so an untrained export can have fewer ops than a
    trained one. Zeros get normal noise (standard deviation 0.1), another
    constant `c` becomes `c` times a uniform factor in [0.5, 1.5] (a
    variance stays positive).
    """
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if not str(weight.dtype).startswith("float"):
            continue
        value = keras.ops.convert_to_numpy(weight)
        if value.size < 2 or not np.all(value == value.flat[0]):
            continue
        constant = float(value.flat[0])
        if constant == 0:
            new = rng.normal(0.0, 0.1, size=value.shape)
        else:
            new = constant * rng.uniform(0.5, 1.5, size=value.shape)
        weight.assign(new.astype(value.dtype))
    return model


def export_model(builder, norm):
    """The model exported and timed: seed 0, trained-like parameters (`trained_like`)."""
    return trained_like(inference_model(builder, norm))


def op_count_difference(counts, baseline):
    """`"identical"` if `counts` equals `baseline` (op type -> count), else the difference.

    E.g. `"+Add x8 +Mul x8 -Conv x1"`: additions first, then removals, each
    sorted by op type.
    """
    ops = sorted(set(counts) | set(baseline))
    diff = {op: counts.get(op, 0) - baseline.get(op, 0) for op in ops}
    added = [f"+{op} x{d}" for op, d in diff.items() if d > 0]
    removed = [f"-{op} x{-d}" for op, d in diff.items() if d < 0]
    return " ".join(added + removed) or "identical"


def export_files(builders, workdir):
    """Folds, exports and counts the ops of every norm of every builder.

    Each model (`export_model`: seed 0, trained-like parameters) is folded
    (`keras_norms.fold`) and written under `workdir` as a SavedModel, a
    TFLite file converted from it and an ONNX file. Returns `{builder:
    {norm: {"tflite": path, "onnx": path, "ops": {"tflite": counts, "onnx":
    counts}}}}`, counts as dicts (op type -> count; `tflite_op_counts`,
    `onnx_op_counts`).
    """
    files = {}
    for builder in builders:
        files[builder] = {}
        for norm in BUILDERS[builder].norms:
            folded = fold(export_model(builder, norm))
            base = os.path.join(workdir, builder, norm)
            saved = export_saved_model(folded, base)
            tflite = convert_tflite(saved, base + ".tflite")
            onnx = export_onnx(folded, base + ".onnx")
            ops = {"tflite": dict(tflite_op_counts(tflite)), "onnx": dict(onnx_op_counts(onnx))}
            files[builder][norm] = {"tflite": tflite, "onnx": onnx, "ops": ops}
    return files


def _fix_tensorflow_threads(threads):
    """TensorFlow's thread pools: `threads` intra-op, 1 inter-op (before it starts)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def export_latency(files, rounds, block_ms, threads=1, seed=0):
    """Per-round batch-1 latency of every export and Keras model (meant for a fresh process).

    For each builder of `files` (`export_files`), every norm's TFLite file,
    ONNX file and Keras model (the unfolded `export_model`) on one image,
    each runtime with `threads` threads (`tflite_runner`, `onnx_runner`;
    TensorFlow's pools are set here, before it starts): each runner is
    warmed up and its calls per round calibrated to about `block_ms`
    milliseconds (`calibrated_calls`), then all of the builder's runners
    alternate for `rounds` rounds (`interleaved_rounds`: the order shuffled
    every round with `seed`, a runtime's runners adjacent, each block after
    2 untimed calls). The TFLite interpreters and onnxruntime sessions are
    made anew every round (`fresh`): in one process, one instance of a
    ResNet-18 file ran up to 12 % slower than another instance of the same
    file for as long as it lived.

    Returns `{builder: {"calls": {runner: calls per round}, "per_round":
    {runner: [seconds per call, one per round]}}}`, runners named
    `"<runtime>/<norm>"`.
    """
    _fix_tensorflow_threads(threads)
    measured = {}
    for builder, norms in files.items():
        x = builder_batch(builder)[0][:1]
        makers = {}
        for norm, paths in norms.items():
            makers[f"tflite/{norm}"] = functools.partial(tflite_runner, paths["tflite"], x, threads)
            makers[f"onnx/{norm}"] = functools.partial(onnx_runner, paths["onnx"], x, threads)
            model = export_model(builder, norm)
            # A Keras model is built once (seconds): its maker hands back the same run.
            makers[f"keras/{norm}"] = lambda m=model: lambda: m(x, training=False)
        calls = {name: calibrated_calls(make(), block_ms / 1000) for name, make in makers.items()}
        per_round = interleaved_rounds(
            makers,
            rounds,
            calls,
            group=lambda name: name.split("/")[0],
            seed=seed,
            warmup=2,
            fresh=True,
        )
        measured[builder] = {"calls": calls, "per_round": per_round}
    return measured


def export_process_env(threads):
    """Environment of an export-latency process: `threads` threads everywhere, fixed malloc."""
    tunables = os.environ.get("GLIBC_TUNABLES")
    return {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": "1",
        "GLIBC_TUNABLES": ":".join(filter(None, [tunables, weight_norm_backends.FIXED_MALLOC])),
    }


def measure_export_latency(files, rounds, block_ms, threads, processes, first_seed=0):
    """`export_latency` in `processes` fresh processes, their rounds pooled (same format).

    Process `p` shuffles its rounds with seed `first_seed + p`. `calls`
    becomes a list, one dict per process.
    """
    pooled = {}
    for p in range(processes):
        measured = in_fresh_process(
            "export_latency",
            "export_latency",
            files,
            rounds,
            block_ms,
            threads,
            first_seed + p,
            env=export_process_env(threads),
        )
        for builder, m in measured.items():
            into = pooled.setdefault(builder, {"calls": [], "per_round": {}})
            into["calls"].append(m["calls"])
            for name, times in m["per_round"].items():
                into["per_round"].setdefault(name, []).extend(times)
    return pooled


def export_rows(files, measured):
    """One row per builder and norm: latencies, ratios with quartiles, op-count differences.

    A ratio `<runtime>_vs_none_export` is the median over rounds of this
    export's time over the `none` export's time in the same round
    (`ratio_summary`), with `_q1` / `_q3` its quartiles and `_rounds` the
    per-round ratios; `tflite_vs_keras` likewise against the Keras model.
    `<runtime>_ms` is the median over rounds of the round's fastest call.
    """
    rows = []
    for builder, norms in files.items():
        per_round = measured[builder]["per_round"]
        for norm in norms:
            row = {"builder": builder, "norm": norm}
            for runtime in EXPORT_RUNTIMES:
                row[f"{runtime}_ms"] = 1000 * statistics.median(per_round[f"{runtime}/{norm}"])
            tflite_keras = ratio_summary(per_round[f"tflite/{norm}"], per_round[f"keras/{norm}"])
            row["tflite_vs_keras"] = tflite_keras["ratio"]
            for runtime in ("tflite", "onnx"):
                summary = ratio_summary(
                    per_round[f"{runtime}/{norm}"], per_round[f"{runtime}/none"]
                )
                key = f"{runtime}_vs_none_export"
                row[key] = summary["ratio"]
                row[key + "_q1"], row[key + "_q3"] = summary["q1"], summary["q3"]
                row[key + "_rounds"] = summary["rounds"]
                row[f"{runtime}_ops_vs_none"] = op_count_difference(
                    norms[norm]["ops"][runtime], norms["none"]["ops"][runtime]
                )
            rows.append(row)
    return rows


def export_goal_lines(rows):
    """Lines saying whether every export that folds away is within `EXPORT_GOAL` of `none`'s.

    An export folds away when its op counts equal the `none` export's, in
    that runtime's file.
    """
    lines = []
    for runtime in ("tflite", "onnx"):
        key = f"{runtime}_vs_none_export"
        folded = [
            r for r in rows if r["norm"] != "none" and r[f"{runtime}_ops_vs_none"] == "identical"
        ]
        kept = [r for r in rows if r[f"{runtime}_ops_vs_none"] != "identical"]
        over = [r for r in folded if r[key] > EXPORT_GOAL]
        verdict = "met"
        if over:
            verdict = "NOT met by " + ", ".join(
                f"{r['builder']} {r['norm']} {r[key]:.3f}x" for r in over
            )
        line = f"{runtime}: {len(folded)} folded exports (op counts equal to `none`'s), {verdict}"
        if folded:
            worst = max(folded, key=lambda r: r[key])
            line += f"; largest {worst[key]:.3f}x ({worst['builder']} {worst['norm']})"
        if kept:
            line += "; not folded: " + ", ".join(
                f"{r['builder']} {r['norm']} {r[key]:.3f}x" for r in kept
            )
        lines.append(line)
    return lines


def repeat_check(first, second, tolerance=REPEAT_TOLERANCE):
    """Both runs' `<runtime>_vs_none_export` ratios side by side, and their relative difference.

    `first` and `second` are `export_rows` of two runs. Returns one dict per
    builder, norm (not `none`) and runtime: `run1`, `run2` (with `_q1` and
    `_q3`), `difference` (`run2 / run1 - 1`) and `agree` (`|difference| <=
    tolerance`).
    """
    second = {(r["builder"], r["norm"]): r for r in second}
    rows = []
    for row in first:
        if row["norm"] == "none":
            continue
        other = second[row["builder"], row["norm"]]
        for runtime in ("tflite", "onnx"):
            key = f"{runtime}_vs_none_export"
            difference = other[key] / row[key] - 1
            rows.append(
                {
                    "builder": row["builder"],
                    "norm": row["norm"],
                    "runtime": runtime,
                    "run1": row[key],
                    "run1_q1": row[key + "_q1"],
                    "run1_q3": row[key + "_q3"],
                    "run2": other[key],
                    "run2_q1": other[key + "_q1"],
                    "run2_q3": other[key + "_q3"],
                    "difference": difference,
                    "agree": abs(difference) <= tolerance,
                }
            )
    return rows


def repeat_check_line(check, tolerance=REPEAT_TOLERANCE):
    """The line naming `check`'s largest difference and whether all runs agree (`None`: empty).

    `check` is `repeat_check`'s rows, compared with the same `tolerance`.
    """
    worst = max(check, key=lambda r: abs(r["difference"]), default=None)
    if worst is None:
        return None
    agree = all(r["agree"] for r in check)
    return (
        f"Largest difference {100 * abs(worst['difference']):.1f} % ({worst['builder']} "
        f"{worst['norm']}, {worst['runtime']}): the two runs "
        f"{'agree' if agree else 'do NOT agree'} within {100 * tolerance:.0f} %"
    )


def export_section(builders, args, workdir):
    """Exports the norms of `builders` under `workdir` and measures their latency.

    `args` carries `run_all.py`'s `--export-*` options and `--repeat-check`
    (which measures twice, as two independent runs). Returns `(report,
    seconds)`: the report's part, `{"exports": rows}` (`export_rows`) and,
    with the repeat check, `"export_second_run"` and `"export_repeat_check"`
    (`repeat_check`); and the wall seconds of the exports, then of each run.
    """
    start = time.perf_counter()
    files = export_files(builders, workdir)
    seconds = [time.perf_counter() - start]
    runs = 2 if args.repeat_check else 1
    all_rows = []
    for run in range(runs):
        start = time.perf_counter()
        measured = measure_export_latency(
            files,
            args.export_rounds,
            args.export_block_ms,
            args.export_threads,
            args.export_processes,
            first_seed=run * args.export_processes,
        )
        all_rows.append(export_rows(files, measured))
        seconds.append(time.perf_counter() - start)
    report = {"exports": all_rows[0]}
    if args.repeat_check:
        report["export_second_run"] = all_rows[1]
        report["export_repeat_check"] = repeat_check(*all_rows)
    return report, seconds
