"""Weight normalization's training-step time as a ratio to the unwrapped layer, per backend.

    python3 benchmarks/weight_norm_backends.py        (about 4 minutes on 2 CPU cores)
    python3 benchmarks/weight_norm_backends.py --backends torch --layers conv1d_stack

For each Keras backend (TensorFlow, JAX, torch), four layers train with
SGD and an MSE loss on one fixed random batch, each plain and wrapped in
`keras_norms.layers.WeightNormalization`:

- `dense`: `Dense(1024)` on a (1024, 1024) batch;
- `conv1d_stack`: 8 `Conv1D(64, 3, padding="causal", activation="relu")`
  with dilations 1, 2, ..., 128 (a TCN / vocoder stack; each layer wrapped)
  on a (16, 1024, 64) batch;
- `conv2d`: `Conv2D(64, 3, padding="same")` on a (32, 32, 32, 64) batch;
- `lstm`: `LSTM(256)` on a (64, 32, 128) batch.

On the torch backend the conv1d stack is also trained as native PyTorch: a
`torch.nn.Sequential` of causal `Conv1d` (channels first), plain and with
`torch.nn.utils.parametrizations.weight_norm`, with `torch.optim.SGD`, on
the same shapes. Its rows compare Keras WN with torch WN and plain Keras
with plain torch (Keras' own overhead), and torch WN with plain torch.

A step is one `model.train_on_batch` (Keras' compiled train step with the
backend's default `jit_compile`: XLA on JAX; none for TensorFlow on CPU nor
for torch), after a warm-up. Each backend and layer is measured in fresh
processes of its own (`KERAS_BACKEND` is read when keras is imported; a
process' earlier models would change its heap), by default 4, spread over
the run: the WN / plain ratio of one process differs from another's by a few
per cent (e.g. 1.02 to 1.08 for JAX's dense). In a process, the variants of
the layer alternate in rounds, their order reversed every other round, so
that a drift in machine load falls on all alike. A time is the median over
all timed steps of all processes, a ratio the quotient of two such medians,
and its spread the quartiles of the per-round ratios (a round's median step
of one variant over the other's).

For repeatable figures every backend process runs with a fixed number of
threads (`--threads`, default 1: on a 2-core machine shared with other
work, a one-thread step is not held up by a second thread waiting for a
busy core; `NPROC` sizes XLA's CPU thread pools), and with glibc malloc
keeping freed memory (`FIXED_MALLOC`; `--default-malloc` to leave glibc's
defaults, under which a step's buffers above the mmap threshold are mapped
afresh and page-faulted in at every step, a cost that depends on the
process' allocation history).

`main(argv)` returns the rows that it prints, as dicts (for `run_all.py`).

Goal (CPU): weight normalization <= 1.05x the plain layer, every backend and layer.
"""

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
FULL = {
    "dense": {"batch": 1024, "features": 1024, "units": 1024},
    "conv1d_stack": {"batch": 16, "length": 1024, "channels": 64, "kernel": 3, "depth": 8},
    "conv2d": {"batch": 32, "side": 32, "channels": 64, "filters": 64},
    "lstm": {"batch": 64, "timesteps": 32, "features": 128, "units": 256},
}
QUICK = {
    "dense": {"batch": 4, "features": 8, "units": 8},
    "conv1d_stack": {"batch": 2, "length": 32, "channels": 4, "kernel": 3, "depth": 8},
    "conv2d": {"batch": 2, "side": 8, "channels": 4, "filters": 4},
    "lstm": {"batch": 2, "timesteps": 4, "features": 4, "units": 4},
}
LAYERS = tuple(FULL)
# glibc malloc in the backend processes: no memory handed back to the OS, no mmap per
# allocation. By default an allocation above the (adaptive, at most 32 MiB) mmap threshold
# is a fresh mapping, page-faulted in at every step: a cost that depends on the process'
# allocation history and on whether a step's buffers cross the threshold.
FIXED_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"


def _set_threads_before_import(threads):
    """Thread counts for every library, set before any of them is imported."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    # The size of XLA's CPU thread pools (JAX), which run independent ops side by side.
    os.environ["NPROC"] = str(threads)
    if threads == 1:
        # XLA's CPU backend (JAX; TensorFlow with jit_compile) otherwise uses every core.
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _set_threads_after_import(backend, threads):
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)


# ---------------------------------------------------------------- one backend


def _keras_layers(layer, shape, wrap):
    import keras

    if layer == "dense":
        layers = [keras.layers.Dense(shape["units"])]
    elif layer == "conv1d_stack":
        layers = [
            keras.layers.Conv1D(
                shape["channels"],
                shape["kernel"],
                padding="causal",
                dilation_rate=2**i,
                activation="relu",
            )
            for i in range(shape["depth"])
        ]
    elif layer == "conv2d":
        layers = [keras.layers.Conv2D(shape["filters"], 3, padding="same")]
    else:
        layers = [keras.layers.LSTM(shape["units"])]
    if wrap:
        from keras_norms.layers import WeightNormalization

        layers = [WeightNormalization(x) for x in layers]
    return layers


def _input_shape(layer, shape):
    if layer == "dense":
        return (shape["features"],)
    if layer == "conv1d_stack":
        return (shape["length"], shape["channels"])
    if layer == "conv2d":
        return (shape["side"], shape["side"], shape["channels"])
    return (shape["timesteps"], shape["features"])


def _keras_model(layer, shape, wrap):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(_input_shape(layer, shape))
    model = keras.Sequential([inputs, *_keras_layers(layer, shape, wrap)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def _batch(model, shape):
    """A fixed random (x, y) batch for `model`, as numpy arrays."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = shape["batch"]
    x = rng.normal(size=(n,) + tuple(model.input_shape[1:])).astype("float32")
    y = rng.normal(size=(n,) + tuple(model.output_shape[1:])).astype("float32")
    return x, y


def _keras_step(model, x, y):
    from keras import ops

    x, y = ops.convert_to_tensor(x), ops.convert_to_tensor(y)
    return lambda: model.train_on_batch(x, y)


def _torch_step(shape, x, y, wrap):
    """A native PyTorch train step of the conv1d stack (channels first), like Keras'."""
    import torch

    torch.manual_seed(0)
    c, k = shape["channels"], shape["kernel"]
    modules = []
    for i in range(shape["depth"]):
        conv = torch.nn.Conv1d(c, c, k, dilation=2**i)
        if wrap:
            conv = torch.nn.utils.parametrizations.weight_norm(conv, dim=0)
        modules += [torch.nn.ConstantPad1d(((k - 1) * 2**i, 0), 0.0), conv, torch.nn.ReLU()]
    net = torch.nn.Sequential(*modules)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.from_numpy(x.transpose(0, 2, 1).copy())
    y = torch.from_numpy(y.transpose(0, 2, 1).copy())

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def alternating_rounds(runs, rounds, steps, warmup):
    """Seconds per call of each `runs[name]()`: every call, and each round's median.

    Each run is called `warmup` times first; then each round calls every run
    `steps` times, the runs' order reversed every other round.
    """
    for run in runs.values():
        for _ in range(warmup):
            run()
    names = list(runs)
    every = {name: [] for name in names}
    per_round = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                runs[name]()
                times.append(time.perf_counter() - start)
            every[name] += times
            per_round[name].append(statistics.median(times))
    return every, per_round


def _quartiles(values):
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def _row(backend, layer, variant, baseline, every, per_round):
    variant_s = statistics.median(every[variant])
    baseline_s = statistics.median(every[baseline])
    low, high = _quartiles([v / b for v, b in zip(per_round[variant], per_round[baseline])])
    return {
        "backend": backend,
        "layer": layer,
        "variant": variant,
        "baseline": baseline,
        "baseline_ms": 1000 * baseline_s,
        "variant_ms": 1000 * variant_s,
        "ratio": variant_s / baseline_s,
        "ratio_q1": low,
        "ratio_q3": high,
        "steps": len(every[variant]),
    }


PAIRS = [("wn", "plain")]
# On torch, the conv1d stack's rows against native PyTorch.
NATIVE_PAIRS = [("plain", "torch_plain"), ("wn", "torch_wn"), ("torch_wn", "torch_plain")]


def measure_layer(layer, shape, rounds, steps, warmup):
    """Step times of `layer` plain and with WN (and native torch), in this process' backend.

    A dict: `layer`, `jit_compile`, `pairs` (variant, baseline) and the
    seconds of every step (`every`) and of each round (`per_round`), by run.
    """
    import keras

    backend = keras.backend.backend()
    models = {"plain": _keras_model(layer, shape, False), "wn": _keras_model(layer, shape, True)}
    x, y = _batch(models["plain"], shape)
    runs = {name: _keras_step(model, x, y) for name, model in models.items()}
    pairs = list(PAIRS)
    if backend == "torch" and layer == "conv1d_stack":
        runs["torch_plain"] = _torch_step(shape, x, y, wrap=False)
        runs["torch_wn"] = _torch_step(shape, x, y, wrap=True)
        pairs += NATIVE_PAIRS
    every, per_round = alternating_rounds(runs, rounds, steps, warmup)
    return {
        "layer": layer,
        "jit_compile": bool(models["plain"].jit_compile),
        "pairs": pairs,
        "every": every,
        "per_round": per_round,
    }


# ---------------------------------------------------------------- all backends


def _run_process(backend, layer, args):
    """`measure_layer` in a new process of `backend`."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--backend",
        backend,
        "--json",
        "--rounds",
        str(args.rounds),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--layers",
        layer,
    ]
    if args.quick:
        command.append("--quick")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    if not args.default_malloc:
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), FIXED_MALLOC]))
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{backend} benchmark failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


MAIN_COLUMNS = {
    "backend": "backend",
    "layer": "layer",
    "plain_ms": "baseline_ms",
    "wn_ms": "variant_ms",
    "wn/plain": "ratio",
    "ratio_iqr": None,
}
NATIVE_COLUMNS = {
    "backend": "backend",
    "layer": "layer",
    "variant": "variant",
    "baseline": "baseline",
    "baseline_ms": "baseline_ms",
    "variant_ms": "variant_ms",
    "ratio": "ratio",
    "ratio_iqr": None,
}


def _cell(row, key):
    if key is None:
        return f"{row['ratio_q1']:.3f}-{row['ratio_q3']:.3f}"
    return f"{row[key]:.3f}" if isinstance(row[key], float) else str(row[key])


def _print_table(title, rows, columns):
    print(f"\n{title}")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(_cell(row, key) for key in columns.values()) + " |")


def backends_problem(backends):
    """Why the comma-separated `backends` cannot be measured here, or None."""
    for backend in backends.split(","):
        if backend not in BACKENDS:
            return f"expected some of {list(BACKENDS)}. Received: {backend!r}"
        if importlib.util.find_spec(backend) is None:
            return (
                f"{backend} is not installed; install JAX and PyTorch with: "
                "pip install 'keras-norms[backends]'"
            )
    return None


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    parser.add_argument("--layers", default=",".join(LAYERS), help="comma-separated")
    parser.add_argument("--rounds", type=int, default=None, help="per process: 5 (--quick: 2)")
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per round and variant: 3 (1)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first: 3 (1)")
    parser.add_argument(
        "--processes", type=int, default=None, help="per backend and layer: 4 (--quick: 1)"
    )
    parser.add_argument("--threads", type=int, default=1, help="per backend process")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and 2 rounds (tests)")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc malloc's defaults (see FIXED_MALLOC)",
    )
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON, last")
    # Set in the backend processes this script starts.
    parser.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    problem = args.backend is None and backends_problem(args.backends)
    if problem:
        parser.error(f"argument --backends: {problem}")
    defaults = (2, 1, 1, 1) if args.quick else (5, 3, 3, 4)
    for name, default in zip(("rounds", "steps", "warmup", "processes"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


def _backend_process(args):
    """This process is one backend's (`--backend`): its measurements, printed as JSON."""
    _set_threads_before_import(args.threads)
    _set_threads_after_import(args.backend, args.threads)
    import keras

    if keras.backend.backend() != args.backend:
        raise RuntimeError(f"KERAS_BACKEND is {keras.backend.backend()}, not {args.backend}")
    start = time.perf_counter()
    shapes = QUICK if args.quick else FULL
    measured = [
        measure_layer(layer, shapes[layer], args.rounds, args.steps, args.warmup)
        for layer in args.layers.split(",")
    ]
    seconds = time.perf_counter() - start
    print(json.dumps({"measured": measured, "seconds": seconds}))
    return measured


def _pooled_rows(backend, measured):
    """The rows of one backend and layer, from its measurements in several processes."""
    every, per_round = {}, {}
    for m in measured:
        for name in m["every"]:
            every.setdefault(name, []).extend(m["every"][name])
            per_round.setdefault(name, []).extend(m["per_round"][name])
    rows = []
    for variant, baseline in measured[0]["pairs"]:
        row = _row(backend, measured[0]["layer"], variant, baseline, every, per_round)
        row["jit_compile"] = measured[0]["jit_compile"]
        row["processes"] = len(measured)
        rows.append(row)
    return rows


def main(argv=None):
    """Runs each backend in a process of its own, prints the tables, returns the rows.

    Each row is a dict: `backend`, `layer`, `variant` and `baseline` (the
    two runs compared: "wn" and "plain", or on torch also "torch_wn" and
    "torch_plain"), `baseline_ms` and `variant_ms` (median step times),
    `ratio` (their quotient), `ratio_q1` and `ratio_q3` (quartiles of the
    per-round ratios), `steps` (timed steps per run, over all its
    processes), `processes` and `jit_compile`.
    """
    args = _parse(argv)
    if args.backend is not None:
        return _backend_process(args)
    start = time.perf_counter()
    backends, layers = args.backends.split(","), args.layers.split(",")
    measured = {(b, layer): [] for b in backends for layer in layers}
    seconds = dict.fromkeys(backends, 0.0)
    # The processes of one backend and layer are spread over the run (machine load drifts).
    for _ in range(args.processes):
        for backend, layer in measured:
            result = _run_process(backend, layer, args)
            measured[backend, layer] += result["measured"]
            seconds[backend] += result["seconds"]
    rows = [row for (b, _), m in measured.items() for row in _pooled_rows(b, m)]
    total = time.perf_counter() - start
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {args.threads} thread(s)"
    malloc = "glibc malloc defaults" if args.default_malloc else "fixed malloc"
    print(
        f"Weight normalization training step vs the plain layer ({machine}, {malloc}; "
        f"{'quick' if args.quick else 'full'} shapes; {args.processes} process(es) per backend "
        f"and layer, each {args.rounds} rounds x {args.steps} steps per variant after "
        f"{args.warmup} warm-up)"
    )
    _print_table(
        "Keras layers: ms per train_on_batch, WN / plain, IQR of the per-round ratios",
        [r for r in rows if r["baseline"] == "plain"],
        MAIN_COLUMNS,
    )
    native = [r for r in rows if r["baseline"] != "plain"]
    if native:
        _print_table(
            "Torch backend vs native PyTorch: the conv1d stack, SGD", native, NATIVE_COLUMNS
        )
    jit = {r["backend"]: r["jit_compile"] for r in rows}
    print("\njit_compile (Keras' default): " + ", ".join(f"{b} {j}" for b, j in jit.items()))
    timing = ", ".join(f"{b} {s:.0f} s" for b, s in seconds.items())
    print(f"Timing: {timing}; {total:.0f} s in all, with imports and compilation.")
    if args.json:
        print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
