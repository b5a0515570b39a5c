"""Timing and memory measurements shared by the benchmark scripts."""

import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def median_times(runs, rounds, calls, warmup=2):
    """Median seconds per call of each `runs[name]()`, in alternating rounds.

    Each run is called `warmup` times first (tracing, first allocations);
    then every round calls each run `calls` times, so all see the same load.
    """
    times = {name: [] for name in runs}
    for run in runs.values():
        for _ in range(warmup):
            run()
    for _ in range(rounds):
        for name, run in runs.items():
            for _ in range(calls):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def median_step_times(models, batch, rounds, steps, warmup=2):
    """Median seconds per `train_on_batch(*batch)` of each model, in alternating rounds."""
    runs = {name: (lambda m=model: m.train_on_batch(*batch)) for name, model in models.items()}
    return median_times(runs, rounds, steps, warmup)


def _status_mib(field):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1]) / 1024


def peak_training_memory_mib(make_model, batch, steps):
    """Resident memory (MiB) added while `make_model()` is built and trained `steps` steps.

    Linux: resets the peak-RSS mark (`/proc/self/clear_refs`) once `batch`
    exists, then reads it back. Meant for a fresh process (`in_fresh_process`).
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = _status_mib("VmRSS")
    model = make_model()
    for _ in range(steps):
        model.train_on_batch(*batch)
    return _status_mib("VmHWM") - start


def in_fresh_process(module, function, *args):
    """`module.function(*args)` (a benchmark script beside this one) in a new Python process."""
    code = (
        f"import json, sys; sys.path.insert(0, {HERE!r}); import {module}; "
        f"print(json.dumps({module}.{function}(*{args!r})))"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
