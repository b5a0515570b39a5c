"""Timing and memory measurements shared by the benchmark scripts."""

import gc
import json
import math
import os
import random
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


def calibrated_calls(run, target_s, warmup=3, min_calls=3, max_calls=10_000, clock=None):
    """How many calls of `run()` take about `target_s` seconds (at least `min_calls`).

    `run` is called `warmup` times untimed (first allocations, caches, the
    CPU's clock leaving idle), then timed one call at a time until the calls
    add up to `target_s` (and at least `min_calls` of them); the count is
    `target_s` over the fastest of them (a call slowed by other work on the
    machine would shorten the blocks), clamped to `[min_calls, max_calls]`.
    `clock` (default `time.perf_counter`) is for tests.
    """
    clock = clock or time.perf_counter
    for _ in range(warmup):
        run()
    times = []
    while len(times) < min_calls or (sum(times) < target_s and len(times) < max_calls):
        start = clock()
        run()
        times.append(clock() - start)
    per_call = min(times)
    calls = math.ceil(target_s / per_call) if per_call > 0 else max_calls
    return max(min_calls, min(max_calls, calls))


def round_order(names, rng, group=None):
    """`names` shuffled by `rng`; with `group(name)`, each group's names stay adjacent.

    The groups are shuffled, and the names inside each group: in a round,
    runs of one group (e.g. one runtime) follow each other closely, and no
    run holds one position in every round.
    """
    if group is None:
        order = list(names)
        rng.shuffle(order)
        return order
    groups = {}
    for name in names:
        groups.setdefault(group(name), []).append(name)
    keys = list(groups)
    rng.shuffle(keys)
    order = []
    for key in keys:
        members = list(groups[key])
        rng.shuffle(members)
        order += members
    return order


def interleaved_rounds(runs, rounds, calls, group=None, seed=0, warmup=1, fresh=False, clock=None):
    """Seconds per call of each `runs[name]()`, one figure per round: the round's fastest call.

    In each round every run is called `warmup` times untimed (its model back
    into the caches after the other runs), then `calls[name]` times, each
    call timed on its own; the fastest is the round's figure (a call that
    lost its core to another process only ever takes longer; on a busy
    2-core machine the fastest call of a block varies least). Python's
    garbage collector runs once before each round and never inside one.

    The runs' order is shuffled every round (`round_order`, seeded by
    `seed`; with `group`, each group's runs stay adjacent), so that a drift
    of the machine's speed, or the cost of following another run, falls on
    every run alike. With `fresh`, `runs[name]` is a function that makes the
    run: every round drops the last round's runs and makes each anew, in the
    round's order. Where a model's memory lies can make one instance of a
    file several per cent slower than another instance of the same file for
    as long as it lives; made anew every round, that becomes noise between
    rounds rather than a bias of the whole measurement. Ratios of two runs
    are then taken within each round (`ratio_summary`).

    Returns `{name: [seconds per call in round 1, round 2, ...]}`.
    """
    clock = clock or time.perf_counter
    rng = random.Random(seed)
    per_round = {name: [] for name in runs}
    collecting = gc.isenabled()
    gc.collect()
    gc.freeze()
    try:
        current = None if fresh else runs
        for _ in range(rounds):
            order = round_order(list(runs), rng, group)
            if fresh:
                current = None
                gc.collect()
                current = {name: runs[name]() for name in order}
            gc.collect()
            gc.disable()
            try:
                for name in order:
                    run = current[name]
                    for _ in range(warmup):
                        run()
                    times = []
                    for _ in range(calls[name]):
                        start = clock()
                        run()
                        times.append(clock() - start)
                    per_round[name].append(min(times))
            finally:
                if collecting:
                    gc.enable()
    finally:
        gc.unfreeze()
    return per_round


def quartiles(values):
    """The first and third quartiles of `values` (inclusive method; one value: itself twice)."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def ratio_summary(variant, baseline):
    """The median and quartiles of the per-round ratios `variant[r] / baseline[r]`.

    `variant` and `baseline` are per-round times of two runs measured in the
    same rounds (`interleaved_rounds`). Returns a dict: `ratio` (the median
    of the per-round ratios, not the ratio of the medians), `q1`, `q3` and
    `rounds` (the per-round ratios).
    """
    if len(variant) != len(baseline) or not variant:
        raise ValueError(
            f"Expected per-round times of the same rounds. Received: {len(variant)} and "
            f"{len(baseline)} rounds"
        )
    ratios = [v / b for v, b in zip(variant, baseline)]
    q1, q3 = quartiles(ratios)
    return {"ratio": statistics.median(ratios), "q1": q1, "q3": q3, "rounds": ratios}


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


def in_fresh_process(module, function, *args, env=None):
    """`module.function(*args)` (a benchmark script beside this one) in a new Python process.

    Its result travels back as JSON; `env` adds environment variables.
    """
    code = (
        f"import json, sys; sys.path.insert(0, {HERE!r}); import {module}; "
        f"print(json.dumps({module}.{function}(*{args!r})))"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{module}.{function} failed in its process:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
