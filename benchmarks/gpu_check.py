"""The GPU goals on JAX, from one run, as one table (run by `gpu_check.sh`).

    KERAS_BACKEND=jax python3 benchmarks/gpu_check.py [--tiny] [--json report.json]

Run it from outside the checkout (`gpu_check.sh` does), with keras_norms
installed: the checkout's `keras_norms/` folder lacks `keras_norms.training`,
which exists only through the install's package_dir mapping (setup.cfg).
Three parts (run in the order 1, 3, 2; the report is written after each),
then the table:

1. `main job`: `keras-norms-train` with its defaults (ConvPool-CNN-C with
   weight normalization + mean-only BN on the offline digits, 30 epochs), in
   this process (`keras_norms.training.cli.main`): test accuracy and training
   wall time (metrics.json's `train_wall_time_s`). Goal: <= 30 s.
2. `fit`: every norm of each of the papers' builders (`BUILDERS`) trains
   `model.fit` on random batches (128 images of 32x32x3, 20 steps) after
   `data_dependent_init` on 256 images, one step first, untimed (the
   compilation). Goal: it runs and its loss is finite; images/s are those
   of the timed `fit` (host-to-device copies included). Each builder's
   default norm trains first, then the others; none starts later than
   `--budget-s` (210 s) after the start, so that the table comes out within
   the GPU machine's 5 minutes (those left are listed as not run). The
   keras.applications builders are listed, and trained with `--applications
   default` (their `bn`) or `all` (every norm; each compiles for minutes).
3. `step ratio`: a layer's training step against its baseline's, each a
   one-layer model with SGD and an MSE loss (Dense(1024) on 1024x1024; 3x3
   64-filter convolutions on 128x32x32x64): Keras' own JAX `train_step`,
   20 of them in one compiled `lax.fori_loop` per call, so that the Python
   dispatch of a `train_on_batch` (about a millisecond) does not hide the
   device's time. The two runs of a pair alternate in shuffled rounds
   (`measure.interleaved_rounds`: a round's figure is its fastest call); the
   ratio is the median of the per-round ratios (`measure.ratio_summary`),
   with their interquartile range. Goals: weight normalization <= 1.02x the
   plain Dense and Conv2D, NormalizedConv2D <= 1.15x a Conv2D,
   NormPropConv2D <= 0.85x a Conv2D + BatchNormalization.

`--tiny` (the CPU test, `tests/test_gpu_check.py`) runs every part on tiny
sizes: 1 epoch of the main job on 200 images at 12x12; 2 steps of batch 2
per builder on 8x8 inputs (or its smallest), its default norm only
(`--norms all`: every norm); 2 rounds of 2 calls of 2 steps per ratio. Its
figures mean nothing; its goals are printed all the same.

Exit status: 0 when every part ran (a goal not met is a `no` in the table,
not a failure); 1 when a part raised (its row says which) or TensorFlow was
imported (the GPU machine has none, and nothing here needs it).
"""

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback

from measure import interleaved_rounds, ratio_summary

MAIN_JOB_GOAL_S = 30.0
# (name, variant, baseline, goal: the variant's step time at most this times the baseline's)
RATIOS = (
    ("WeightNormalization(Dense) / Dense", "wn_dense", "dense", 1.02),
    ("WeightNormalization(Conv2D) / Conv2D", "wn_conv2d", "conv2d", 1.02),
    ("NormalizedConv2D / Conv2D", "normalized_conv2d", "conv2d", 1.15),
    ("NormPropConv2D / Conv2D+BatchNormalization", "normprop_conv2d", "conv2d+bn", 0.85),
)
SIZES = {
    "full": {
        "main_job": [],
        "fit_batch": 128,
        "fit_side": 32,
        "fit_steps": 20,
        "init_examples": 256,
        "norms": "all",
        "dense": (1024, 1024, 1024),  # batch, features, units
        "conv": (128, 32, 32, 64, 64),  # batch, side, side, channels, filters
        "rounds": 7,
        "calls": 5,
        "steps_per_call": 20,
    },
    "tiny": {
        "main_job": ["--epochs", "1", "--train-examples", "200", "--image-size", "12"],
        "fit_batch": 2,
        "fit_side": 8,
        "fit_steps": 2,
        "init_examples": 16,
        "norms": "default",
        "dense": (4, 8, 8),
        "conv": (2, 8, 8, 4, 4),
        "rounds": 2,
        "calls": 2,
        "steps_per_call": 2,
    },
}
APPLICATIONS = ("none", "default", "all")
COLUMNS = ("part", "item", "result", "ratio", "goal", "met")


def _row(part, item, result, ratio="", goal="", met="", **extra):
    return {
        "part": part,
        "item": item,
        "result": result,
        "ratio": ratio,
        "goal": goal,
        "met": met,
        **extra,
    }


def _yes(flag):
    return "yes" if flag else "no"


def _error_row(part, item, error):
    message = " ".join(str(error).split()).replace("|", "/")  # one table cell
    return _row(part, item, f"ERROR {type(error).__name__}: {message}"[:200], met="no", error=True)


# ---------------------------------------------------------------- 1. the main job


def main_job(sizes, workdir):
    """`keras-norms-train` with the defaults (plus `sizes["main_job"]`): rows and metrics."""
    from keras_norms.training import cli

    run_dir = os.path.join(workdir, "main_job")
    argv = sizes["main_job"] + ["--output", run_dir, "--verbose", "2"]
    print(f"main job: keras-norms-train {' '.join(argv)}", flush=True)
    status = cli.main(argv)
    if status != 0:
        raise RuntimeError(f"keras-norms-train exited with status {status}")
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    item = f"{metrics['model']} {metrics['norm']} on {metrics['dataset']}"
    item += f", {metrics['epochs']} epoch" + ("s" if metrics["epochs"] != 1 else "")
    wall = metrics["train_wall_time_s"]
    rows = [
        _row("main job", item, f"test accuracy {metrics['test_accuracy']:.4f}"),
        _row(
            "main job",
            "training wall time",
            f"{wall:.1f} s",
            f"{wall / MAIN_JOB_GOAL_S:.3f}",
            f"<= {MAIN_JOB_GOAL_S:.0f} s",
            _yes(wall <= MAIN_JOB_GOAL_S),
        ),
    ]
    return rows, metrics


# ---------------------------------------------------------------- 2. every builder's fit


def fit_builder(name, norm, sizes):
    """`name` with `norm` under `model.fit` on random batches: its row."""
    import keras
    import numpy as np
    from builder_throughput import compile_for_training

    import keras_norms
    from keras_norms.models import BUILDERS

    builder = BUILDERS[name]
    side = max(sizes["fit_side"], builder.min_input_size)
    batch, steps = sizes["fit_batch"], sizes["fit_steps"]
    keras.utils.set_random_seed(0)
    model = compile_for_training(builder.build((side, side, 3), 10, norm))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * steps, side, side, 3)).astype("float32")
    y = rng.integers(0, 10, size=batch * steps)
    # A no-op without weight normalization. On a couple of images its g would be far too large.
    x_init = rng.normal(size=(sizes["init_examples"], side, side, 3)).astype("float32")
    keras_norms.data_dependent_init(model, x_init)
    # The first step compiles; the timed fit reuses the compiled step.
    model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, shuffle=False, verbose=0)
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    seconds = time.perf_counter() - start
    loss = float(history.history["loss"][-1])
    images_per_s = batch * steps / seconds
    return _row(
        "fit",
        f"{name} {norm}",
        f"{images_per_s:.0f} images/s, loss {loss:.3f}",
        goal="runs, finite loss",
        met=_yes(math.isfinite(loss)),
        builder=name,
        norm=norm,
        images_per_s=images_per_s,
        loss=loss,
        input_shape=[batch, side, side, 3],
    )


def fit_rows(sizes, norms, applications, deadline):
    """A row per builder and norm trained, and one per builder for the norms not trained.

    Each builder's default norm trains first, then the others, each builder's
    in turn; none starts after `deadline` (`time.perf_counter()` seconds),
    so that the table comes out within the GPU machine's time.
    """
    import keras

    from keras_norms.models import BUILDERS

    chosen, why = {}, {}
    for name, builder in BUILDERS.items():
        if builder.application:
            count = {"none": 0, "default": 1, "all": len(builder.norms)}[applications]
            why[name] = "not run (keras.applications: --applications default or all)"
        else:
            count = len(builder.norms) if norms == "all" else 1
            why[name] = "not run (--norms default: the builder's default norm only)"
        chosen[name] = builder.norms[:count]
    order = [(name, norms[0]) for name, norms in chosen.items() if norms]
    order += [(name, norm) for name, norms in chosen.items() for norm in norms[1:]]
    done, late = {}, {}
    for name, norm in order:
        if time.perf_counter() > deadline:
            late.setdefault(name, []).append(norm)
            continue
        try:
            done[name, norm] = fit_builder(name, norm, sizes)
        except Exception as error:  # reported in the table; the other builders still run
            traceback.print_exc()
            done[name, norm] = _error_row("fit", f"{name} {norm}", error)
        print(f"fit: {done[name, norm]['item']}: {done[name, norm]['result']}", flush=True)
        keras.backend.clear_session()
        gc.collect()
    rows = []
    for name, builder in BUILDERS.items():
        rows += [done[name, norm] for norm in builder.norms if (name, norm) in done]
        if late.get(name):
            rows.append(_row("fit", f"{name} {', '.join(late[name])}", "not run (time budget)"))
        skipped = [norm for norm in builder.norms if norm not in chosen[name]]
        if skipped:
            rows.append(_row("fit", f"{name} {', '.join(skipped)}", why[name]))
    return rows


# ---------------------------------------------------------------- 3. step ratios


def _layers(name, sizes):
    """Layer `name`'s stack: `layer_steps.LAYERS`' at this check's filters, or one of the
    Dense and weight-normalized layers it adds."""
    import keras
    from layer_steps import LAYERS

    from keras_norms import layers as kn

    filters = sizes["conv"][-1]
    if name in LAYERS:
        return LAYERS[name](filters)
    return {
        "dense": lambda: [keras.layers.Dense(sizes["dense"][2])],
        "wn_dense": lambda: [
            kn.WeightNormalization(keras.layers.Dense(sizes["dense"][2]), data_init=False)
        ],
        "wn_conv2d": lambda: [
            kn.WeightNormalization(keras.layers.Conv2D(filters, 3, padding="same"), data_init=False)
        ],
    }[name]()


def device_steps(name, sizes):
    """A function running `steps_per_call` of layer `name`'s Keras train steps, and waiting.

    The model's `train_step` (Keras' JAX trainer: loss, gradients, SGD
    update, metrics) runs in a compiled `lax.fori_loop` from the model's
    state after one `train_on_batch` (which builds the optimizer and metrics).
    """
    import jax
    import keras
    import numpy as np

    dense = name.endswith("dense")
    batch_shape = sizes["dense"][:2] if dense else sizes["conv"][:4]
    out_shape = (
        (sizes["dense"][0], sizes["dense"][2]) if dense else sizes["conv"][:3] + sizes["conv"][4:]
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(batch_shape[1:]), *_layers(name, sizes)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=batch_shape).astype("float32")
    y = rng.normal(size=out_shape).astype("float32")
    model.train_on_batch(x, y)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    x, y = jax.device_put(x), jax.device_put(y)
    steps = sizes["steps_per_call"]

    @jax.jit
    def run(state, x, y):
        return jax.lax.fori_loop(0, steps, lambda _, s: model.train_step(s, (x, y))[1], state)

    return lambda: jax.block_until_ready(run(state, x, y))


def ratio_rows(sizes):
    import keras

    rows = []
    steps = sizes["steps_per_call"]
    for title, variant, baseline, goal in RATIOS:
        try:
            runs = {variant: device_steps(variant, sizes), baseline: device_steps(baseline, sizes)}
            calls = dict.fromkeys(runs, sizes["calls"])
            per_round = interleaved_rounds(runs, sizes["rounds"], calls, warmup=1)
            summary = ratio_summary(per_round[variant], per_round[baseline])
            ms = {n: 1000 * statistics.median(t) / steps for n, t in per_round.items()}
            rows.append(
                _row(
                    "step ratio",
                    title,
                    f"{ms[variant]:.3f} / {ms[baseline]:.3f} ms per step",
                    f"{summary['ratio']:.3f} ({summary['q1']:.3f}-{summary['q3']:.3f})",
                    f"<= {goal}",
                    _yes(summary["ratio"] <= goal),
                    variant=variant,
                    baseline=baseline,
                    variant_ms=ms[variant],
                    baseline_ms=ms[baseline],
                    ratio_value=summary["ratio"],
                    ratio_q1=summary["q1"],
                    ratio_q3=summary["q3"],
                    goal_value=goal,
                )
            )
        except Exception as error:
            traceback.print_exc()
            rows.append(_error_row("step ratio", title, error))
        print(f"step ratio: {title}: {rows[-1]['ratio'] or rows[-1]['result']}", flush=True)
        keras.backend.clear_session()
        gc.collect()
    return rows


# ---------------------------------------------------------------- the table


def print_table(title, rows):
    print(f"\n{title}")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU test)")
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument(
        "--norms",
        choices=("all", "default"),
        default=None,
        help="the papers' builders: every norm (default) or each builder's default norm "
        "(default with --tiny)",
    )
    parser.add_argument(
        "--applications",
        choices=APPLICATIONS,
        default="none",
        help="the keras.applications builders: not trained (default), their default norm, "
        "or every norm",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=210.0,
        help="seconds from the start after which no further builder starts (default: 210)",
    )
    return parser.parse_args(argv)


def _report(args, mode, machine, parts, seconds, metrics):
    """The report: the table's rows (main job, fit, step ratios, environment) and the rest."""
    import jax
    import keras

    rows = [row for part in ("main job", "fit", "step ratio", "environment") for row in parts[part]]
    return {
        "mode": mode,
        "machine": machine,
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "keras": keras.__version__,
        "norms": args.norms or SIZES[mode]["norms"],
        "applications": args.applications,
        "main_job_metrics": metrics,
        "rows": rows,
        "seconds": seconds,
        "tensorflow_imported": "tensorflow" in sys.modules,
    }


def _write(report, path):
    """`report` as JSON at `path` (after each part: a run cut short leaves what it measured)."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(report, f, indent=2)


def main(argv=None):
    args = _parse(argv)
    mode = "tiny" if args.tiny else "full"
    sizes = SIZES[mode]
    start = time.perf_counter()
    import jax
    import keras

    if keras.backend.backend() != "jax":
        print(f"gpu_check: error: KERAS_BACKEND is {keras.backend.backend()}, not jax")
        return 1
    devices = [str(d) for d in jax.devices()]
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {', '.join(devices)}"
    print(f"gpu_check ({mode} sizes): JAX {jax.__version__}, Keras {keras.__version__}")
    print(f"devices: {devices}", flush=True)
    parts = {"main job": [], "fit": [], "step ratio": [], "environment": []}
    seconds, metrics = {}, None
    with tempfile.TemporaryDirectory() as workdir:
        part_start = time.perf_counter()
        try:
            parts["main job"], metrics = main_job(sizes, workdir)
        except Exception as error:
            traceback.print_exc()
            parts["main job"] = [_error_row("main job", "keras-norms-train", error)]
        seconds["main_job"] = time.perf_counter() - part_start
    _write(_report(args, mode, machine, parts, seconds, metrics), args.json)
    # The ratios before the builders: a few small models, then the builders up to the budget.
    part_start = time.perf_counter()
    parts["step ratio"] = ratio_rows(sizes)
    seconds["step_ratio"] = time.perf_counter() - part_start
    _write(_report(args, mode, machine, parts, seconds, metrics), args.json)
    part_start = time.perf_counter()
    norms = args.norms or sizes["norms"]
    parts["fit"] = fit_rows(sizes, norms, args.applications, start + args.budget_s)
    seconds["fit"] = time.perf_counter() - part_start
    tensorflow_imported = "tensorflow" in sys.modules
    parts["environment"] = [
        _row(
            "environment",
            "TensorFlow imported (this process: main job included)",
            _yes(tensorflow_imported),
            goal="no",
            met=_yes(not tensorflow_imported),
        )
    ]
    seconds["total"] = time.perf_counter() - start
    report = _report(args, mode, machine, parts, seconds, metrics)
    print_table(
        f"GPU check ({mode} sizes{': figures mean nothing' if args.tiny else ''}; {machine}; "
        f"JAX {jax.__version__}, Keras {keras.__version__})",
        report["rows"],
    )
    goals = [r for r in report["rows"] if r["met"]]
    print(
        f"\nGoals met: {sum(r['met'] == 'yes' for r in goals)} of {len(goals)}. Timing: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    )
    _write(report, args.json)
    if args.json:
        print(f"report: {args.json}")
    assert not tensorflow_imported, "TensorFlow was imported: the GPU machine has none"
    return 1 if any(r.get("error") for r in report["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
