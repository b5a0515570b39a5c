"""What one finished run measured, by name: the metrics the experiments' claims and tables use.

A run directory (written by `keras-norms-train`) holds `metrics.json`,
`history.csv` (per epoch) and, with `--log-every-steps`, `steps.csv` (per
step). `outcome(run, name)` reads one number from them:

- `test_error`, `validation_error`: percent, after training, with population
  statistics recomputed over the training split for models with batch
  statistics (`--recompute-statistics`; the verdicts use these);
- `test_error_running_averages`, `validation_error_running_averages`: the
  same with the exponential running averages (models with batch statistics
  only; NaN for the others);
- `final_training_loss`: the last epoch's mean training loss (`history.csv`);
- `mean_training_loss`: the area under the per-step training-loss curve
  divided by its steps (`steps.csv`): lower is faster training;
- `steps_to_training_loss_X`: the first logged step whose own batch loss is
  at most `X` (e.g. `steps_to_training_loss_0.5`); runs that never reach it
  count as one log interval past their last step;
- `epoch_time_s`: the mean wall time of the epochs after the first (which
  also traces the step);
- `hidden_input_shift`: internal covariate shift (NormProp, figure 2): for
  each hidden layer, the standard deviation over the measurements (before
  training, then after each epoch) of one unit's input mean, in units of
  that input's standard deviation over the run (`hidden_input_curve`;
  `--track-hidden-inputs`), averaged over the layers.
"""

import csv
import json
import math
import os

import numpy as np

STEPS_TO_LOSS = "steps_to_training_loss_"
NAMES = (
    "test_error",
    "validation_error",
    "test_error_running_averages",
    "validation_error_running_averages",
    "final_training_loss",
    "mean_training_loss",
    "epoch_time_s",
    "hidden_input_shift",
)
# The unit of a difference of two outcomes, where it has one.
UNITS = {
    "test_error": " points",
    "validation_error": " points",
    "test_error_running_averages": " points",
    "validation_error_running_averages": " points",
    "epoch_time_s": " s",
    "hidden_input_shift": " std",
}


def _rows(path):
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def read_run(run_dir):
    """`{"metrics": ..., "history": [...], "steps": [...]}` of a finished run directory."""
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    steps_path = os.path.join(run_dir, "steps.csv")
    return {
        "metrics": metrics,
        "history": _rows(os.path.join(run_dir, "history.csv")),
        "steps": _rows(steps_path) if os.path.isfile(steps_path) else [],
    }


def check_name(name):
    """Raises ValueError for a name `outcome` does not know."""
    if name in NAMES:
        return
    if name.startswith(STEPS_TO_LOSS):
        try:
            float(name[len(STEPS_TO_LOSS) :])
            return
        except ValueError:
            pass
    raise ValueError(
        f"Unknown outcome. Expected one of {NAMES} or '{STEPS_TO_LOSS}X' (X a loss). "
        f"Received: {name!r}"
    )


def _error(metrics, key):
    accuracy = metrics.get(key)
    return math.nan if accuracy is None else 100.0 * (1.0 - accuracy)


def hidden_input_curve(run):
    """Each observed hidden layer's unit input mean, before training and after each epoch
    (`--track-hidden-inputs`), in units of that input's standard deviation over the run: the
    root mean square of its E + 1 measured standard deviations, one scale per unit, so that
    a unit that dies (its input's std falling to ~0 at some epoch) does not blow up its own
    curve, as dividing each mean by its own std would.

    Returns:
        `{k: array of E + 1 floats}` for the observed layers `k = 1, 2, ...`
        (E epochs; the first value is before training). A unit whose input is
        constant over the split at every measurement (std 0) has no
        distribution to shift: its values are 0.

    Raises:
        ValueError: if the run did not track hidden inputs (or, trained before
            they were measured before training, has no such point).
    """
    prefix = "hidden_input_mean_"
    before = run["metrics"].get("hidden_inputs_before_training")
    if not before:
        raise ValueError(
            "The hidden inputs' curve needs a run trained with --track-hidden-inputs (and "
            "its measurement before training in metrics.json)."
        )
    layers = sorted(int(key[len(prefix) :]) for key in before if key.startswith(prefix))
    rows = [before] + run["history"]
    curves = {}
    for k in layers:
        means = np.array([row[f"{prefix}{k}"] for row in rows])
        stds = np.array([row[f"hidden_input_std_{k}"] for row in rows])
        scale = np.sqrt(np.mean(np.square(stds)))
        curves[k] = means / scale if scale > 0 else np.zeros_like(means)
    return curves


def _hidden_input_shift(run):
    """Mean over layers of the std over measurements of `hidden_input_curve`."""
    return float(np.mean([np.std(curve) for curve in hidden_input_curve(run).values()]))


def outcome(run, name):
    """The outcome `name` (see the module docstring) of `run` (`read_run`'s dict), a float.

    Raises:
        ValueError: for an unknown name, or a per-step outcome of a run
            without `steps.csv`.
    """
    check_name(name)
    metrics, history, steps = run["metrics"], run["history"], run["steps"]
    if name.endswith("_error") or name.endswith("_error_running_averages"):
        split, _, rest = name.partition("_error")
        return _error(metrics, f"{split}_accuracy{rest}")
    if name == "final_training_loss":
        return history[-1]["loss"]
    if name == "hidden_input_shift":
        return _hidden_input_shift(run)
    if name == "epoch_time_s":
        times = [row["epoch_time_s"] for row in history[1:]] or [history[0]["epoch_time_s"]]
        return float(np.mean(times))
    if not steps:
        raise ValueError(f"The outcome {name!r} needs steps.csv (--log-every-steps).")
    step = np.array([row["step"] for row in steps])
    loss = np.array([row["loss"] for row in steps])
    if name == "mean_training_loss":
        if len(step) == 1:
            return float(loss[0])
        return float(np.trapezoid(loss, step) / (step[-1] - step[0]))
    threshold = float(name[len(STEPS_TO_LOSS) :])
    reached = np.flatnonzero(loss <= threshold)
    interval = step[1] - step[0] if len(step) > 1 else step[0]
    return float(step[reached[0]] if reached.size else step[-1] + interval)
