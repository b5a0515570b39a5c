"""Every benchmark of keras-norms in one process, on the same inputs, as one report.

    python3 benchmarks/run_all.py            (about 15 minutes on 2 CPU cores)
    python3 benchmarks/run_all.py --sections export --repeat-check

1. `layers`: training-step time and peak memory of each normalization on one
   (32, 16, 16, 32) batch, 32 filters 3x3, as ratios to a plain `Conv2D` and
   to `Conv2D` + Keras `BatchNormalization`. Memory is measured in a fresh
   process per layer (Linux peak RSS, `/proc/self/clear_refs`).
2. `builders`: training throughput (images/s) of every builder and norm on
   the same random batches, as a ratio to the builder's `bn` variant.
3. `export`: batch-1 latency of each folded export, the TFLite file
   (`ai_edge_litert`) and the ONNX file (onnxruntime), as a ratio to the same
   builder's `none` export (and the TFLite file's to the Keras model), and
   whether each export's graph has the same op counts as the `none` export's
   (the exact check that a norm folded away), else their difference.
4. `applications`: training throughput of `keras.applications` ResNet50,
   MobileNetV2 and EfficientNetB0 with their `BatchNormalization` replaced
   by other norms (`keras_norms.replace_normalization`), as a ratio to the
   BN original; skipped, with a printed line, where that function is absent.
5. `wn_backends`: weight normalization per backend (`weight_norm_backends.py`,
   about 4.5 minutes, in processes of their own): WN's training step as a
   ratio to the same unwrapped Dense, dilated Conv1D stack, Conv2D and LSTM
   on TensorFlow, JAX and torch, and on torch against native PyTorch weight
   norm.

Training times are medians over alternating rounds, so every variant sees
the same machine load. Export latency is measured in fresh processes
(`--export-processes`, 2) with one thread for every runtime
(`export_latency`, `measure.interleaved_rounds`, the runtimes made anew
every round): a ratio is the median over rounds of the ratio of the two
exports' times in the same round, printed with the interquartile range of
those per-round ratios; `--repeat-check` measures the export latency twice
and prints how far the two runs' ratios are apart. Goals (CPU): weight
normalization <= 1.05x Conv2D, mean-only BN faster than BN, every export of a
norm that folds away <= 1.05x the latency of the `none` export.
"""

import argparse
import collections
import functools
import json
import os
import platform
import statistics
import tempfile
import time
import warnings

import keras
import numpy as np
import weight_norm_backends

from keras_norms import layers as kn
from keras_norms.export.exporter import (
    convert_tflite,
    export_onnx,
    export_saved_model,
    onnx_op_counts,
)
from keras_norms.folding import fold
from keras_norms.models import BUILDERS, paper_builders
from keras_norms.surgery import replace_normalization

from measure import (
    calibrated_calls,
    in_fresh_process,
    interleaved_rounds,
    median_step_times,
    peak_training_memory_mib,
    ratio_summary,
)

SECTIONS = ("layers", "builders", "export", "applications", "wn_backends")
LAYER_SHAPE = (32, 16, 16, 32)
FILTERS = 32
BUILDER_BATCH = 32
BUILDER_SIDE = 16
# Export latency: the runtimes timed, the goal for a norm that folds away and the agreement
# asked of two runs (`--repeat-check`).
EXPORT_RUNTIMES = ("tflite", "onnx", "keras")
EXPORT_GOAL = 1.05
REPEAT_TOLERANCE = 0.03


def builder_input(builder):
    """`(side, side, 1)`: 16, or the smallest power of two above it that `builder` accepts."""
    side = BUILDER_SIDE
    while side < BUILDERS[builder].min_input_size:
        side *= 2
    return (side, side, 1)


def _conv(use_bias=True):
    return keras.layers.Conv2D(FILTERS, 3, padding="same", use_bias=use_bias)


LAYERS = {
    "conv2d": lambda: [_conv()],
    "conv2d+bn": lambda: [_conv(False), keras.layers.BatchNormalization()],
    "weight_norm": lambda: [kn.WeightNormalization(_conv())],
    "conv2d+mean_only_bn": lambda: [_conv(False), kn.MeanOnlyBatchNormalization()],
    "normprop_conv2d": lambda: [kn.NormPropConv2D(FILTERS, 3, padding="same", activation=None)],
    "conv2d+dwck": lambda: [_conv(False), kn.DWCKNormalization()],
    "conv2d+learned_statistics": lambda: [_conv(False), kn.LearnedStatisticsNormalization()],
    "normalized_conv2d": lambda: [kn.NormalizedConv2D(FILTERS, 3, padding="same")],
}


def _layer_model(name):
    model = keras.Sequential([keras.Input(LAYER_SHAPE[1:]), *LAYERS[name]()])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def _layer_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=LAYER_SHAPE).astype("float32")
    return x, rng.normal(size=LAYER_SHAPE[:3] + (FILTERS,)).astype("float32")


def layer_peak_memory_mib(name, steps=3):
    """Peak resident memory (MiB) added by building and training layer `name` (fresh process)."""
    return peak_training_memory_mib(lambda: _layer_model(name), _layer_batch(), steps)


def layer_table(rounds, steps):
    times = median_step_times({n: _layer_model(n) for n in LAYERS}, _layer_batch(), rounds, steps)
    memory = {name: in_fresh_process("run_all", "layer_peak_memory_mib", name) for name in LAYERS}
    return [
        {
            "layer": name,
            "ms_per_step": 1000 * times[name],
            "time_vs_conv2d": times[name] / times["conv2d"],
            "time_vs_bn": times[name] / times["conv2d+bn"],
            "peak_mib": memory[name],
            "memory_vs_conv2d": memory[name] / memory["conv2d"],
            "memory_vs_bn": memory[name] / memory["conv2d+bn"],
        }
        for name in LAYERS
    ]


def _inference_model(builder, norm):
    keras.utils.set_random_seed(0)
    return BUILDERS[builder].build(builder_input(builder), 10, norm)


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


def _export_model(builder, norm):
    """The model exported and timed: seed 0, trained-like parameters (`trained_like`)."""
    return trained_like(_inference_model(builder, norm))


def _builder_model(builder, norm):
    model = _inference_model(builder, norm)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _builder_batch(builder):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BUILDER_BATCH,) + builder_input(builder)).astype("float32")
    return x, rng.integers(0, 10, size=BUILDER_BATCH)


def builder_table(builders, rounds, steps):
    rows = []
    for builder in builders:
        models = {norm: _builder_model(builder, norm) for norm in BUILDERS[builder].norms}
        times = median_step_times(models, _builder_batch(builder), rounds, steps)
        for norm in BUILDERS[builder].norms:
            rows.append(
                {
                    "builder": builder,
                    "norm": norm,
                    "images_per_s": BUILDER_BATCH / times[norm],
                    "throughput_vs_bn": times["bn"] / times[norm],
                }
            )
    return rows


# ---------------------------------------------------------------- export


def tflite_runner(path, x, threads=1):
    """A function that runs the TFLite file at `path` once on `x` (`threads` threads)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    (index,) = [detail["index"] for detail in interpreter.get_input_details()]
    interpreter.resize_tensor_input(index, list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    return interpreter.invoke


def onnx_runner(path, x, threads=1):
    """A function that runs the ONNX file at `path` once on `x` with onnxruntime.

    One session, `threads` intra-op threads, one inter-op thread,
    sequential execution, the CPU provider.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    (input_,) = session.get_inputs()
    feed = {input_.name: x}
    return lambda: session.run(None, feed)


def tflite_op_counts(path):
    """How many operators of each type the TFLite file at `path` has (a `collections.Counter`).

    Read from an interpreter before it allocates tensors, so before any
    delegate replaces operators by its own.
    """
    from ai_edge_litert.interpreter import Interpreter

    # `_get_ops_details` is the interpreter's only listing of its operators.
    details = Interpreter(model_path=path)._get_ops_details()
    return collections.Counter(op["op_name"] for op in details)


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

    Each model is built with seed 0 and trained-like parameters
    (`trained_like`), folded (`keras_norms.fold`) and written as a
    SavedModel, a TFLite file converted from it and an ONNX file.
    Returns `{builder: {norm: {"tflite": path, "onnx": path, "ops": {"tflite":
    counts, "onnx": counts}}}}`.
    """
    files = {}
    for builder in builders:
        files[builder] = {}
        for norm in BUILDERS[builder].norms:
            folded = fold(_export_model(builder, norm))
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

    For each builder, every norm's TFLite file, ONNX file and Keras model
    (the unfolded model) on one image, each runtime with `threads` threads
    (TensorFlow's pools are set here, before it starts): each runner is
    warmed up and its calls per round calibrated to about `block_ms`
    milliseconds (`calibrated_calls`), then all of the builder's runners
    alternate for `rounds` rounds (`interleaved_rounds`: the order shuffled
    every round, a runtime's runners adjacent, each block after 2 untimed
    calls). The TFLite interpreters and onnxruntime sessions are made anew
    every round (`fresh`): in one process, one instance of a ResNet-18 file
    ran up to 12 % slower than another instance of the same file for as
    long as it lived.

    Returns `{builder: {"calls": {runner: calls per round}, "per_round":
    {runner: [seconds per call, one per round]}}}`, runners named
    `"<runtime>/<norm>"`.
    """
    _fix_tensorflow_threads(threads)
    measured = {}
    for builder, norms in files.items():
        x = _builder_batch(builder)[0][:1]
        makers = {}
        for norm, paths in norms.items():
            makers[f"tflite/{norm}"] = functools.partial(tflite_runner, paths["tflite"], x, threads)
            makers[f"onnx/{norm}"] = functools.partial(onnx_runner, paths["onnx"], x, threads)
            model = _export_model(builder, norm)
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
            "run_all",
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


EXPORT_COLUMNS = [
    "builder",
    "norm",
    "tflite_ms",
    "tflite_vs_keras",
    "tflite_vs_none_export",
    "tflite_ops_vs_none",
    "onnx_ms",
    "onnx_vs_none_export",
    "onnx_ops_vs_none",
]


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


def export_section(builders, args, workdir):
    """Exports, measures (twice with `args.repeat_check`) and prints; returns the report part."""
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
    rounds = args.export_rounds * args.export_processes
    _print_table(
        f"Export: batch-1 latency, {args.export_threads} thread(s); ratios: median over "
        f"{rounds} rounds of the per-round ratio (interquartile range); ops: vs the `none` "
        f"export",
        all_rows[0],
        EXPORT_COLUMNS,
    )
    print(f"Goal: every export that folds away within {EXPORT_GOAL}x the `none` export's latency")
    for line in export_goal_lines(all_rows[0]):
        print("  " + line)
    timing = " and ".join(f"{t:.0f} s" for t in seconds[1:])
    print(
        f"Timing: exports {seconds[0]:.0f} s, latency {timing} ({args.export_processes} "
        f"process(es) of {args.export_rounds} rounds per run)"
    )
    report = {"exports": all_rows[0]}
    if args.repeat_check:
        check = repeat_check(*all_rows)
        _print_table(
            "Export repeat check: the ratios to the `none` export of two runs (processes), "
            "interquartile range in brackets",
            check,
            ["builder", "norm", "runtime", "run1", "run2", "difference"],
        )
        worst = max(check, key=lambda r: abs(r["difference"]), default=None)
        if worst is not None:
            agree = all(r["agree"] for r in check)
            print(
                f"Largest difference {100 * abs(worst['difference']):.1f} % ({worst['builder']} "
                f"{worst['norm']}, {worst['runtime']}): the two runs "
                f"{'agree' if agree else 'do NOT agree'} within {100 * REPEAT_TOLERANCE:.0f} %"
            )
        report["export_second_run"] = all_rows[1]
        report["export_repeat_check"] = check
    return report


# ---------------------------------------------------------------- applications

APPLICATION_INPUT = (32, 32, 3)
APPLICATION_BATCH = 32
APPLICATION_TARGETS = ("gn", "mobn", "wn", "nc")
# The registered keras.applications builders, each building its BN original.
APPLICATIONS = {
    name: functools.partial(builder.build, APPLICATION_INPUT, 10, "bn")
    for name, builder in sorted(BUILDERS.items())
    if builder.application
}


def _compiled(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def applications_table(
    rounds,
    steps,
    batch=APPLICATION_BATCH,
    applications=None,
    targets=APPLICATION_TARGETS,
    replace=replace_normalization,
    block_ms=30,
):
    """Training throughput of keras.applications models with BN replaced, as a ratio to BN's.

    For each application (`applications`: name -> a function building it;
    default `APPLICATIONS`) the original (`bn`) and, for each target norm,
    `replace(application(), target)` (default
    `keras_norms.replace_normalization`, returning `(new_model, report)`;
    the report's `replaced` and `refused` say how many normalizations it
    replaced and kept), compiled with SGD, train on one random batch of
    `batch` images in alternating rounds (`interleaved_rounds`, at least
    `steps` steps per round after a warm-up). A target that replaces
    nothing, or that `replace` refuses (`ValueError`, `NotImplementedError`),
    gets a row with `skipped` and the reason. `throughput_vs_bn` is the
    median over rounds of BN's step time over the variant's in the same
    round, with its quartiles.

    Returns the rows.
    """
    applications = APPLICATIONS if applications is None else applications
    rows = []
    for name, make in applications.items():
        keras.utils.set_random_seed(0)
        models = {"bn": _compiled(make())}
        replaced = {"bn": ""}
        skipped = {}
        for target in targets:
            keras.utils.set_random_seed(0)
            try:
                with warnings.catch_warnings():
                    # The normalizations a target cannot replace are in its report.
                    warnings.simplefilter("ignore", UserWarning)
                    new_model, report = replace(make(), target)
            except (ValueError, NotImplementedError) as error:
                skipped[target] = str(error).splitlines()[0] if str(error) else repr(error)
                continue
            done, kept = len(report.replaced), len(report.refused)
            if not done:
                reason = report.refused[0].reason if kept else "no normalization found"
                skipped[target] = f"nothing replaced: {reason}"
                continue
            models[target] = _compiled(new_model)
            replaced[target] = f"{done}/{done + kept}"
        rng = np.random.default_rng(0)
        shape = tuple(models["bn"].input_shape[1:])
        x = rng.normal(size=(batch,) + shape).astype("float32")
        y = rng.integers(0, int(models["bn"].output_shape[-1]), size=batch)
        runs = {norm: (lambda m=model: m.train_on_batch(x, y)) for norm, model in models.items()}
        calls = {
            norm: calibrated_calls(run, block_ms / 1000, warmup=2, min_calls=steps)
            for norm, run in runs.items()
        }
        per_round = interleaved_rounds(runs, rounds, calls, seed=0, warmup=0)
        for norm in runs:
            summary = ratio_summary(per_round["bn"], per_round[norm])
            rows.append(
                {
                    "application": name,
                    "norm": norm,
                    "replaced": replaced[norm],
                    "images_per_s": batch / statistics.median(per_round[norm]),
                    "throughput_vs_bn": summary["ratio"],
                    "throughput_vs_bn_q1": summary["q1"],
                    "throughput_vs_bn_q3": summary["q3"],
                    "throughput_vs_bn_rounds": summary["rounds"],
                    "skipped": "",
                }
            )
        for target, reason in skipped.items():
            rows.append(
                {
                    "application": name,
                    "norm": target,
                    "replaced": "",
                    "images_per_s": float("nan"),
                    "throughput_vs_bn": float("nan"),
                    "skipped": reason,
                }
            )
    return rows


# ---------------------------------------------------------------- the report


def _cell(row, key):
    value = row[key]
    if isinstance(value, float):
        cell = f"{value:.3f}"
        if f"{key}_q1" in row:  # a ratio with its spread
            cell += f" ({row[key + '_q1']:.3f}-{row[key + '_q3']:.3f})"
        elif key == "difference":
            cell = f"{100 * value:+.1f} %"
        return cell
    return str(value)


def _print_table(title, rows, columns):
    print(f"\n{title}")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(_cell(row, c) for c in columns) + " |")


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, of {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="training sections' rounds")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round and variant")
    parser.add_argument(
        "--builders",
        default=None,
        help="comma-separated (default: the papers' networks, not the keras.applications ones)",
    )
    parser.add_argument(
        "--export-rounds", type=int, default=21, help="export latency: rounds per process"
    )
    parser.add_argument(
        "--export-block-ms",
        type=float,
        default=30.0,
        help="export latency: milliseconds of calls per runner and round (calibrated)",
    )
    parser.add_argument(
        "--export-threads", type=int, default=1, help="export latency: threads of every runtime"
    )
    parser.add_argument(
        "--export-processes",
        type=int,
        default=2,
        help="export latency: fresh processes whose rounds are pooled",
    )
    parser.add_argument(
        "--repeat-check",
        action="store_true",
        help="measure export latency twice and print how far the two runs' ratios are apart",
    )
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument(
        "--wn-backends",
        default="tensorflow,jax,torch",
        help="backends of the weight-normalization benchmark (comma-separated, empty: none)",
    )
    parser.add_argument("--wn-quick", action="store_true", help="its tiny shapes (tests)")
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; expected some of {list(SECTIONS)}")
    if "wn_backends" in args.sections and args.wn_backends:
        # Checked before the other sections' minutes of measuring.
        problem = weight_norm_backends.backends_problem(args.wn_backends)
        if problem:
            parser.error(f"argument --wn-backends: {problem}")
    return args


def main(argv=None):
    args = _parse(argv)
    keras.utils.set_random_seed(0)
    builders = args.builders.split(",") if args.builders else paper_builders()
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {keras.backend.backend()} backend"
    print(f"keras-norms benchmark report ({machine}; sections: {', '.join(args.sections)})")
    report = {"machine": machine, "sections": args.sections}
    if "layers" in args.sections:
        report["layers"] = layer_table(args.rounds, args.steps)
        _print_table(
            f"Layers: training step on {LAYER_SHAPE}, {FILTERS} filters 3x3",
            report["layers"],
            [
                "layer",
                "ms_per_step",
                "time_vs_conv2d",
                "time_vs_bn",
                "peak_mib",
                "memory_vs_conv2d",
                "memory_vs_bn",
            ],
        )
    if "builders" in args.sections:
        report["builders"] = builder_table(builders, args.rounds, args.steps)
        _print_table(
            f"Builders: training throughput, batch {BUILDER_BATCH}",
            report["builders"],
            ["builder", "norm", "images_per_s", "throughput_vs_bn"],
        )
    if "export" in args.sections:
        with tempfile.TemporaryDirectory() as workdir:
            report.update(export_section(builders, args, workdir))
    if "applications" in args.sections:
        report["applications"] = applications_table(args.rounds, args.steps)
        _print_table(
            f"Applications: training throughput, batch {APPLICATION_BATCH}, "
            f"{APPLICATION_INPUT}, BN replaced; ratio to BN: median over rounds "
            f"(interquartile range)",
            report["applications"],
            ["application", "norm", "replaced", "images_per_s", "throughput_vs_bn", "skipped"],
        )
    if "wn_backends" in args.sections and args.wn_backends:
        print("\nWeight normalization per backend")
        wn_argv = ["--backends", args.wn_backends] + (["--quick"] if args.wn_quick else [])
        report["weight_norm_backends"] = weight_norm_backends.main(wn_argv)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
