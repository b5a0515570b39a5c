"""`keras-norms-experiment`: run a paper's experiment over seeds, then tabulate and plot it.

Every (configuration, seed) pair is one `keras-norms-train` run in its own
directory, `OUTPUT/NAME/runs/CONFIGURATION/seedK`; a pair whose `metrics.json`
exists is skipped (refused if it was trained with other flags than the spec's
now), and a stopped pair resumes from its last finished epoch
(the training CLI's backup), so a stopped experiment resumes where it was.
After the runs, `OUTPUT/NAME/` holds `histories.csv` (every run's per-epoch
history), `table.md` (mean ± standard deviation over seeds, the papers'
numbers beside, then the experiment's analyses) and one PNG per plotted
history column, e.g. `loss.png` (one curve per configuration, its band the
seeds' range); `OUTPUT/README.md` indexes every experiment reported there.
"""

import argparse
import csv
import json
import os
import sys
import time

import numpy as np

from keras_norms import datasets
from keras_norms.command_line import positive_int
from keras_norms.training import cli as train_cli
from keras_norms.training.experiments import EXPERIMENTS, FULL, SCALES

ALL = "all"
CURVE_LABELS = {
    "loss": "training loss",
    "accuracy": "training accuracy",
    "val_loss": "test loss",
    "val_accuracy": "test accuracy",
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-norms-experiment",
        description="Run one of the papers' experiments over seeds with keras-norms-train, "
        "then write its per-epoch histories (CSV), a table beside the papers' numbers "
        "(Markdown) and a figure (PNG).",
    )
    parser.add_argument(
        "name",
        nargs="?",
        choices=sorted(EXPERIMENTS) + [ALL],
        help=f"the experiment, or {ALL!r}: every experiment, one after another",
    )
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
    argv = list(experiment.train_flags(configuration, args.scale, args.dataset))
    argv += ["--seed", str(seed), "--verbose", "0"]
    argv += ["--output", _run_dir(args, configuration, seed)]
    return argv + (["--data-dir", args.data_dir] if args.data_dir else [])


def _finished(argv):
    """Whether the run `argv` describes has finished (its `metrics.json` is there).

    Raises:
        RuntimeError: if its directory holds a run trained with other flags (the
            experiment's spec changed since): its results would not be this run's.
    """
    train_args = train_cli.parse_args(argv)
    try:
        train_cli._check_run_flags(train_args.output, train_args)
    except train_cli.RunDirectoryError as error:
        raise RuntimeError(str(error)) from None
    return os.path.isfile(os.path.join(train_args.output, "metrics.json"))


def run_pairs(args, experiment):
    """Train every (configuration, seed) pair not finished yet; returns the pairs' count.

    Raises:
        RuntimeError: if a run fails (its own error is printed above).
    """
    pairs = [(c, s) for c in experiment.configurations for s in range(args.seeds)]
    for index, (configuration, seed) in enumerate(pairs, 1):
        progress = f"[{index}/{len(pairs)}] {experiment.name} {configuration.name} seed {seed}"
        argv = _train_argv(args, experiment, configuration, seed)
        if _finished(argv):
            print(f"{progress}: finished before, skipped", flush=True)
            continue
        print(f"{progress}: training", flush=True)
        start = time.perf_counter()
        if train_cli.main(argv) != 0:
            raise RuntimeError(f"{progress} failed; run the command again to resume")
        print(f"{progress}: done in {time.perf_counter() - start:.0f} s", flush=True)
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
                    values = {k: float(v) for k, v in row.items() if k != "epoch" and v}
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
    """Every row in one CSV; a column a configuration does not log stays empty."""
    fields = ["configuration", "seed", "epoch"]
    fields += sorted({k for row in rows for k in row} - set(fields))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
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
    header += ["s / epoch (after the first)"] + [
        result.source for result in experiment.paper_results
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for configuration in experiment.configurations:
        name = configuration.name
        errors = [100 * (1 - m["test_accuracy"]) for m in finals if m["configuration"] == name]
        ours = [r for r in rows if r["configuration"] == name]
        last = max(r["epoch"] for r in ours)
        losses = [r["loss"] for r in ours if r["epoch"] == last]
        # The first epoch also traces and compiles the steps: timed apart when there are more.
        timed = [r for r in ours if "epoch_time_s" in r and (r["epoch"] > 0 or last == 0)]
        times = [r["epoch_time_s"] for r in timed]
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


def figure(experiment, rows, column, path):
    """`column` per epoch: the mean over seeds per configuration, the seeds' range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = CURVE_LABELS.get(column, column)
    fig, ax = plt.subplots(figsize=(8, 4))
    count = len(experiment.configurations)
    ax.set_prop_cycle(color=plt.get_cmap("tab20" if count > 10 else "tab10").colors[:count])
    for configuration in experiment.configurations:
        ours = [r for r in rows if r["configuration"] == configuration.name and column in r]
        epochs = sorted({r["epoch"] for r in ours})
        by_epoch = np.array([[r[column] for r in ours if r["epoch"] == e] for e in epochs])
        mean = _smoothed(by_epoch.mean(axis=1), experiment.smoothing)
        x = np.array(epochs) + 1
        ax.plot(x, mean, marker="o" if len(x) < 5 else None, label=configuration.name)
        ax.fill_between(x, by_epoch.min(axis=1), by_epoch.max(axis=1), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    if column.endswith("loss"):
        ax.set_yscale("log")
    ax.set_title(f"{experiment.name}: {label} (band: range over seeds)")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(args, experiment):
    """Write histories.csv, table.md (with the analyses) and the figures; returns the table."""
    rows, finals = collect(args, experiment)
    directory = os.path.join(args.output, experiment.name)
    write_histories(rows, os.path.join(directory, "histories.csv"))
    sections = [table(args, experiment, rows, finals)]
    sections += [analysis(args, experiment, rows) for analysis in experiment.analyses]
    for column in experiment.curves:
        figure(experiment, rows, column, os.path.join(directory, f"{column}.png"))
        sections.append(f"![{experiment.name}: {column}]({column}.png)\n")
    markdown = "\n".join(sections)
    with open(os.path.join(directory, "table.md"), "w") as f:
        f.write(markdown)
    write_index(args.output)
    return markdown


def write_index(output):
    """`OUTPUT/README.md`: every experiment reported under `output`, with its table and command."""
    lines = [
        "# Results",
        "",
        "Written by `keras-norms-experiment`; every number here comes from the runs under "
        "each experiment's `runs/`. To reproduce a paper's own setting on the full dataset: "
        "`keras-norms-experiment NAME --dataset cifar10 --seeds 3` (see each table for the "
        "setting).",
        "",
    ]
    for name, experiment in EXPERIMENTS.items():
        path = os.path.join(output, name, "table.md")
        if os.path.isfile(path):
            lines.append(f"- [`{name}`]({name}/table.md): {experiment.claim}.")
    with open(os.path.join(output, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        _list()
        return 0
    if args.name is None:
        parser.error("name an experiment (--list lists them)")
    names = list(EXPERIMENTS) if args.name == ALL else [args.name]
    start = time.perf_counter()
    for name in names:
        args.name = name
        try:
            run_pairs(args, EXPERIMENTS[name])
        except RuntimeError as error:
            print(f"keras-norms-experiment: error: {error}", file=sys.stderr)
            return 1
        print(report(args, EXPERIMENTS[name]))
    print(f"{', '.join(names)}: {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
