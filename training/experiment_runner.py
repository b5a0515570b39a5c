"""`keras-norms-experiment`: run a paper's experiment over seeds, then tabulate and plot it.

Every (configuration, seed) pair is one `keras-norms-train` run in its own
directory, `OUTPUT/NAME/runs/CONFIGURATION/seedK`; a pair whose `metrics.json`
exists is skipped, and a stopped pair resumes from its last finished epoch
(the training CLI's backup), so a stopped experiment resumes where it was.
After the runs, `OUTPUT/NAME/` holds `histories.csv` (every run's per-epoch
history), `table.md` (mean ± standard deviation over seeds, the papers'
numbers beside) and `training_loss.png` (one curve per configuration, its
band the seeds' range).
"""

import argparse
import csv
import json
import os
import sys

import numpy as np

from keras_norms import datasets
from keras_norms.command_line import positive_int
from keras_norms.training import cli as train_cli
from keras_norms.training.experiments import EXPERIMENTS, FULL, SCALES

HISTORY_FIELDS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-norms-experiment",
        description="Run one of the papers' experiments over seeds with keras-norms-train, "
        "then write its per-epoch histories (CSV), a table beside the papers' numbers "
        "(Markdown) and a figure (PNG).",
    )
    parser.add_argument("name", nargs="?", choices=sorted(EXPERIMENTS), help="the experiment")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds 0..N-1")
    parser.add_argument(
        "--scale",
        choices=SCALES,
        default=FULL,
        help="quick: a few steps per run (a smoke test); full: the stated digits setting, or "
        "the paper's on another dataset",
    )
    parser.add_argument("--dataset", default=datasets.DIGITS, choices=datasets.DATASETS)
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data dir")
    parser.add_argument(
        "--output",
        default="results",
        help="directory of all experiments: NAME/ gets the report, NAME/runs/ the runs",
    )
    return parser


def _list():
    for experiment in EXPERIMENTS.values():
        names = ", ".join(c.name for c in experiment.configurations)
        print(f"{experiment.name}: {experiment.claim}.\n  mirrors {experiment.mirrors}")
        print(f"  configurations: {names}\n  paper setting: {experiment.paper_setting}")


def _run_dir(args, configuration, seed):
    return os.path.join(args.output, args.name, "runs", configuration.name, f"seed{seed}")


def _train_argv(args, experiment, configuration, seed):
    argv = list(configuration.flags) + list(experiment.flags(args.scale, args.dataset))
    argv += ["--dataset", args.dataset, "--seed", str(seed), "--verbose", "0"]
    argv += ["--output", _run_dir(args, configuration, seed)]
    return argv + (["--data-dir", args.data_dir] if args.data_dir else [])


def run_pairs(args, experiment):
    """Train every (configuration, seed) pair not finished yet; returns the pairs' count.

    Raises:
        RuntimeError: if a run fails (its own error is printed above).
    """
    pairs = [(c, s) for c in experiment.configurations for s in range(args.seeds)]
    for index, (configuration, seed) in enumerate(pairs, 1):
        progress = f"[{index}/{len(pairs)}] {experiment.name} {configuration.name} seed {seed}"
        if os.path.isfile(os.path.join(_run_dir(args, configuration, seed), "metrics.json")):
            print(f"{progress}: finished before, skipped", flush=True)
            continue
        print(f"{progress}: training", flush=True)
        if train_cli.main(_train_argv(args, experiment, configuration, seed)) != 0:
            raise RuntimeError(f"{progress} failed; run the command again to resume")
    return len(pairs)


def collect(args, experiment):
    """Every run's history rows (with configuration, seed) and final metrics."""
    rows, finals = [], []
    for configuration in experiment.configurations:
        for seed in range(args.seeds):
            run_dir = _run_dir(args, configuration, seed)
            with open(os.path.join(run_dir, "metrics.json")) as f:
                metrics = json.load(f)
            finals.append({"configuration": configuration.name, "seed": seed, **metrics})
            with open(os.path.join(run_dir, "history.csv")) as f:
                for row in csv.DictReader(f):
                    values = {k: float(row[k]) for k in HISTORY_FIELDS if row.get(k)}
                    rows.append(
                        {
                            "configuration": configuration.name,
                            "seed": seed,
                            "epoch": int(row["epoch"]),
                            **values,
                        }
                    )
    return rows, finals


def write_histories(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("configuration", "seed", "epoch") + HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _mean_std(values):
    values = np.asarray(values, "float64")
    return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.2f}"


def _published(result, name):
    return f"{result.values[name]:.2f}" if name in result.values else ""


def table(args, experiment, rows, finals):
    """The Markdown table: our mean ± std over seeds beside each paper's number."""
    header = ["configuration", f"test error % (n={args.seeds})", "final training loss"]
    header += ["s / epoch"] + [result.source for result in experiment.paper_results]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for configuration in experiment.configurations:
        name = configuration.name
        errors = [100 * (1 - m["test_accuracy"]) for m in finals if m["configuration"] == name]
        ours = [r for r in rows if r["configuration"] == name]
        last = max(r["epoch"] for r in ours)
        losses = [r["loss"] for r in ours if r["epoch"] == last]
        times = [r["epoch_time_s"] for r in ours if "epoch_time_s" in r]
        cells = [name, _mean_std(errors), _mean_std(losses), _mean_std(times)]
        cells += [_published(result, name) for result in experiment.paper_results]
        lines.append("| " + " | ".join(cells) + " |")
    setting = " ".join(experiment.flags(args.scale, args.dataset))
    return "\n".join(
        [
            f"## {experiment.name}: {experiment.claim}",
            "",
            f"Mirrors {experiment.mirrors}.",
            f"Ours: `{args.dataset}`, `{setting}`, seeds 0-{args.seeds - 1} "
            f"(`--scale {args.scale}`). The papers: {experiment.paper_setting}.",
            "",
            *lines,
            "",
        ]
    )


def _smoothed(curve, window):
    from scipy.signal import savgol_filter

    window = min(window, len(curve) - (1 - len(curve) % 2))  # odd, at most the length
    if window < 3:
        return curve
    return savgol_filter(curve, window, polyorder=min(2, window - 1))


def figure(experiment, rows, path):
    """Training loss per epoch: the mean over seeds per configuration, the seeds' range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for configuration in experiment.configurations:
        ours = [r for r in rows if r["configuration"] == configuration.name]
        epochs = sorted({r["epoch"] for r in ours})
        by_epoch = np.array([[r["loss"] for r in ours if r["epoch"] == e] for e in epochs])
        mean = _smoothed(by_epoch.mean(axis=1), experiment.smoothing)
        x = np.array(epochs) + 1
        ax.plot(x, mean, marker="o" if len(x) < 5 else None, label=configuration.name)
        ax.fill_between(x, by_epoch.min(axis=1), by_epoch.max(axis=1), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title(f"{experiment.name}: training loss (band: range over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(args, experiment):
    """Write histories.csv, table.md and training_loss.png; returns the table."""
    rows, finals = collect(args, experiment)
    directory = os.path.join(args.output, experiment.name)
    write_histories(rows, os.path.join(directory, "histories.csv"))
    markdown = table(args, experiment, rows, finals)
    with open(os.path.join(directory, "table.md"), "w") as f:
        f.write(markdown)
    figure(experiment, rows, os.path.join(directory, "training_loss.png"))
    return markdown


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        _list()
        return 0
    if args.name is None:
        parser.error("name an experiment (--list lists them)")
    experiment = EXPERIMENTS[args.name]
    try:
        run_pairs(args, experiment)
    except RuntimeError as error:
        print(f"keras-norms-experiment: error: {error}", file=sys.stderr)
        return 1
    print(report(args, experiment))
    return 0


if __name__ == "__main__":
    sys.exit(main())
