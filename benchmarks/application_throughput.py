"""The `applications` section of `run_all.py`: keras.applications with BN replaced.

Training throughput of the registered `keras.applications` builders
(ResNet50, MobileNetV2, EfficientNetB0) with their `BatchNormalization`
replaced by other norms (`keras_norms.replace_normalization`), as a ratio to
the BN original: the median over alternating rounds of the per-round ratio.
"""

import functools
import statistics
import warnings

import keras
import numpy as np
from builder_throughput import compile_for_training

from keras_norms.models import BUILDERS
from keras_norms.surgery import replace_normalization

from measure import calibrated_calls, interleaved_rounds, ratio_summary

APPLICATION_INPUT = (32, 32, 3)
APPLICATION_BATCH = 32
APPLICATION_TARGETS = ("gn", "mobn", "wn", "nc")
# The registered keras.applications builders, each building its BN original.
APPLICATIONS = {
    name: functools.partial(builder.build, APPLICATION_INPUT, 10, "bn")
    for name, builder in sorted(BUILDERS.items())
    if builder.application
}


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
        models = {"bn": compile_for_training(make())}
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
            models[target] = compile_for_training(new_model)
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
