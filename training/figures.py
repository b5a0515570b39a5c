"""An experiment's figures: validation error against learning rate, and training curves per step.

Curves are drawn against training steps (configurations at different batch
sizes take different numbers of steps per epoch): each seed a thin line, the
mean over seeds a thick one with its 95 % t-interval as a band; training
solid, validation dashed (at the step that ends each epoch). One figure per
panel of configurations (`Experiment.panels`; all in one by default).
"""

import os

import numpy as np

from keras_norms.training import grid

# Moving-average window (logged steps) of the per-step training error, whose batches are noisy.
ERROR_WINDOW = 9


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (files only, no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(curves):
    """Mean and 95 % t-interval over the rows of `curves` (seeds x points)."""
    from scipy import stats

    curves = np.asarray(curves, "float64")
    mean = curves.mean(axis=0)
    if len(curves) < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.975, len(curves) - 1) * curves.std(axis=0, ddof=1) / np.sqrt(len(curves))
    return mean, mean - half, mean + half


def _moving_average(values, window):
    if len(values) < window:
        return np.asarray(values)
    return np.convolve(values, np.ones(window) / window, mode="valid")


def learning_rate_figure(experiment, chosen, path):
    """Validation error (mean over tuning seeds, and each seed) against the learning rate."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for configuration in experiment.configurations:
        rate, errors = chosen[configuration.name]
        rates = sorted(errors)
        means = [np.mean(errors[r]) for r in rates]
        (line,) = ax.plot(rates, means, marker="o", label=f"{configuration.name} ({rate:g})")
        for r in rates:
            ax.scatter([r] * len(errors[r]), errors[r], s=8, color=line.get_color(), alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation error % (tuning seeds)")
    ax.set_title(
        f"{experiment.name}: the rate chosen (legend) by validation error", fontsize="medium"
    )
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _epoch_end_steps(run):
    """The step that ends each epoch, from steps.csv (the epoch index where it is missing)."""
    ends = {}
    for row in run["steps"]:
        ends[int(row["epoch"])] = row["step"]
    return [ends.get(int(row["epoch"]), row["epoch"] + 1) for row in run["history"]]


def curves_figure(title, runs, path):
    """Training loss per step (left); training error per step and validation error per epoch
    (right); `runs` is `{configuration: [read_run dict per seed]}`."""
    plt = pyplot()
    fig, (loss_ax, error_ax) = plt.subplots(1, 2, figsize=(12, 4))
    colors = plt.get_cmap("tab10").colors
    for color, (name, seeds) in zip(colors * 3, runs.items()):
        steps = [np.array([r["step"] for r in run["steps"]]) for run in seeds]
        length = min(len(s) for s in steps)
        if length:
            x = steps[0][:length]
            losses = [[r["loss"] for r in run["steps"][:length]] for run in seeds]
            errors = [
                _moving_average(
                    [100 * (1 - r["accuracy"]) for r in run["steps"][:length]], ERROR_WINDOW
                )
                for run in seeds
            ]
            for ax, curves, xs in (
                (loss_ax, losses, x),
                (error_ax, errors, x[len(x) - len(errors[0]) :]),
            ):
                for curve in curves:
                    ax.plot(xs, curve, color=color, linewidth=0.5, alpha=0.35)
                mean, low, high = _band(curves)
                ax.plot(xs, mean, color=color, linewidth=1.8, label=name)
                ax.fill_between(xs, low, high, color=color, alpha=0.15)
        validation = [
            [100 * (1 - row["val_accuracy"]) for row in run["history"] if "val_accuracy" in row]
            for run in seeds
        ]
        if validation and all(validation):
            epochs = min(len(v) for v in validation)
            x = _epoch_end_steps(seeds[0])[:epochs]
            mean, low, high = _band([v[:epochs] for v in validation])
            error_ax.plot(x, mean, color=color, linestyle="--", marker="o", markersize=3)
            error_ax.fill_between(x, low, high, color=color, alpha=0.1)
    loss_ax.set_yscale("log")
    loss_ax.set_ylabel("training loss (each logged step's batch)")
    loss_ax.set_title("training loss", fontsize="small")
    error_ax.set_ylabel("error %")
    error_ax.set_title(
        f"training (solid: mean of {ERROR_WINDOW} logged batches)\nvalidation (dashed: each "
        "epoch; running averages where the model has batch statistics)",
        fontsize="x-small",
    )
    for ax in (loss_ax, error_ax):
        ax.set_xlabel("training step")
    if loss_ax.get_legend_handles_labels()[0]:
        loss_ax.legend(fontsize="x-small")
    fig.suptitle(f"{title}\nthin: seeds; band: 95 % t-interval of the mean", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def experiment_figures(experiment, runs, chosen, directory):
    """Draw the experiment's figures into `directory`; returns `[(path, caption), ...]`."""
    drawn = []
    if any(len(errors) > 1 for _, errors in chosen.values()):
        path = os.path.join(directory, "learning_rates.png")
        learning_rate_figure(experiment, chosen, path)
        drawn.append((path, f"{experiment.name}: validation error against learning rate"))
    panels = experiment.panels or (tuple(c.name for c in experiment.configurations),)
    for index, panel in enumerate(panels):
        label = ", ".join(f"{name} ({grid.rate_label(chosen[name][0])})" for name in panel)
        path = os.path.join(
            directory, f"curves_{index + 1}.png" if len(panels) > 1 else "curves.png"
        )
        curves_figure(f"{experiment.name}: {label}", {name: runs[name] for name in panel}, path)
        drawn.append((path, f"{experiment.name}: training curves of {', '.join(panel)}"))
    return drawn
