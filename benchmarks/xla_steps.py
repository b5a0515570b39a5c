"""The `xla` section of `run_all.py`: each builder and norm with and without XLA, per backend.

Every norm of each builder trains on the builders section's batch
(`builder_throughput`: `BUILDER_BATCH` images at the digits size) twice,
compiled with `jit_compile=False` and with `jit_compile=True`, in a fresh
process per backend (`KERAS_BACKEND` is read when Keras is imported). For
each: the first step's seconds (tracing and compiling included) and the
median step time over alternating rounds. `run_s_*` is a typical run's
time, the digits main job's `TYPICAL_STEPS` steps (30 epochs of 15 steps
at batch 100): the first step plus the other steps at the median, and
`xla_speedup` its quotient, plain over XLA (above 1: XLA is faster over
such a run).
"""

import time

import keras
from builder_throughput import builder_batch, compile_for_training, inference_model

from keras_norms.models import BUILDERS

from measure import in_fresh_process, median_step_times

# 30 epochs of the 1,437 training digits at batch 100: the digits main job's steps.
TYPICAL_STEPS = 30 * 15
BACKENDS = ("tensorflow", "jax")


def builder_xla_rows(builder, norms, rounds, steps):
    """One row per norm of `norms` of `builder` on this process's backend (see the module
    docstring)."""
    batch = builder_batch(builder)
    # One step of the builder first, untimed: the process's one-time costs (the backend's
    # first op, its thread pools) would otherwise land on the first row.
    compile_for_training(inference_model(builder, norms[0])).train_on_batch(*batch)
    rows = []
    for norm in norms:
        models, first = {}, {}
        for jit in (False, True):
            model = compile_for_training(inference_model(builder, norm), jit_compile=jit)
            start = time.perf_counter()
            model.train_on_batch(*batch)
            first[jit] = time.perf_counter() - start
            models[jit] = model
        times = median_step_times(models, batch, rounds, steps)
        run = {jit: first[jit] + (TYPICAL_STEPS - 1) * times[jit] for jit in (False, True)}
        rows.append(
            {
                "backend": keras.backend.backend(),
                "builder": builder,
                "norm": norm,
                "first_step_s_plain": first[False],
                "first_step_s_xla": first[True],
                "ms_per_step_plain": 1000 * times[False],
                "ms_per_step_xla": 1000 * times[True],
                "run_s_plain": run[False],
                "run_s_xla": run[True],
                "xla_speedup": run[False] / run[True],
            }
        )
    return rows


def xla_table(builders, rounds, steps, backends=BACKENDS):
    """`builder_xla_rows` of every builder of `builders`, each backend in a process of its own."""
    rows = []
    for backend in backends:
        for builder in builders:
            rows += in_fresh_process(
                "xla_steps",
                "builder_xla_rows",
                builder,
                list(BUILDERS[builder].norms),
                rounds,
                steps,
                env={"KERAS_BACKEND": backend},
            )
    return rows
