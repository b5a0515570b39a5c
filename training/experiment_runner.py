"""`keras-norms-experiment`: run a paper's experiment under a fair protocol, then report it.

The protocol, for every experiment:

- **Splits.** One fixed split (`--split-seed 0`); the last examples of the
  training split are the validation split (`VALIDATION_EXAMPLES`); every
  choice is made on it. The test split is evaluated once per run, after
  training, and chooses nothing. Seeds vary the initialization and the batch
  order only.
- **Learning rate per configuration** (`keras_norms.training.grid`): every
  rate of the configuration's grid for the tuning seeds, and past an edge of
  the grid while the edge is chosen and better than its neighbour (at most
  `grid.MAX_EXTENSIONS` rates more); the rate with the lowest mean
  validation error is kept, and the remaining seeds run at it.
- **Batch statistics** are evaluated twice (`--recompute-statistics`): with
  their running averages and with population statistics recomputed on the
  training split; verdicts use the recomputed figures.
- **Per-step curves** (`--log-every-steps`): each logged step's own training
  loss and accuracy.
- **Claims and verdicts** (`keras_norms.training.claims`): each claim of the
  spec is tested paired by seed; the verdict comes from the effect's 95 %
  bootstrap interval.

Every (configuration, rate, seed) is one `keras-norms-train` run in
`OUTPUT/NAME/runs/CONFIGURATION/lrRATE/seedK`; a run whose `metrics.json`
exists is skipped (refused if trained with other flags than the spec's now),
a stopped one resumes. Commit each finished run's `metrics.json`,
`flags.json`, `history.csv` and `steps.csv` (`.gitignore` keeps the rest
out): a later session's runner skips them. The report: `OUTPUT/NAME/table.md`
(verdicts, cells with intervals, the chosen rates), `histories.csv`, figures,
`OUTPUT/verdicts.csv` and `OUTPUT/README.md` (every experiment's verdicts).
"""

import argparse
import csv
import dataclasses
import os
import shlex
import sys
import time

import numpy as np

from keras_norms import datasets
from keras_norms.command_line import positive_int
from keras_norms.training import claims as claims_module
from keras_norms.training import cli as train_cli
from keras_norms.training import grid, outcomes, statistics
from keras_norms.training.config import RunDirectoryError
from keras_norms.training.experiments import EXPERIMENTS, FULL, QUICK, SCALES

ALL = "all"
# Validation examples held out of the training split, per scale and dataset kind.
VALIDATION_EXAMPLES = {QUICK: 8, "offline": 300, "paper": 5000}
LOG_EVERY_STEPS = {QUICK: 1, FULL: 10}
# A run "converged" when its final training loss is below this share of chance's, ln(classes).
CONVERGED_SHARE_OF_CHANCE = 0.9
VERDICTS_FILE = "verdicts.csv"
# The index's words for an experiment with a table but no verdicts: one from the earlier protocol.
UNTESTED = (
    "its table comes from the earlier protocol (settings chosen on the test split, one "
    "learning rate, 3 seeds, running averages) and gives no verdict."
)
VERDICT_FIELDS = (
    "experiment",
    "claim",
    "outcome",
    "first",
    "second",
    "direction",
    "margin",
    "n",
    "effect",
    "low",
    "high",
    "p",
    "p_holm",
    "pair_verdict",
    "claim_verdict",
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-norms-experiment",
        description="Run one of the papers' experiments with keras-norms-train under a fair "
        "protocol (a validation split, a learning rate chosen per configuration, seeds, "
        "paired tests), then write its verdicts, tables (Markdown), histories (CSV) and "
        "figures (PNG).",
    )
    parser.add_argument(
        "name",
        nargs="?",
        choices=sorted(EXPERIMENTS) + [ALL],
        help=f"the experiment, or {ALL!r}: every experiment, one after another",
    )
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        help="final seeds 0..N-1 at each configuration's chosen rate (default: the "
        "experiment's, 8 where a claim needs them)",
    )
    parser.add_argument(
        "--tuning-seeds",
        type=positive_int,
        default=2,
        help="seeds 0..N-1 trained at every rate of a grid to choose the rate (default: 2)",
    )
    parser.add_argument(
        "--scale",
        choices=SCALES,
        default=FULL,
        help="quick: a few steps per run and the grid's first rate (a smoke test); full: the "
        "stated digits setting, or the paper's on another dataset",
    )
    parser.add_argument("--dataset", default=datasets.DIGITS_HARD, choices=datasets.DATASETS)
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
        print(f"{experiment.name}: {experiment.topic}.\n  mirrors {experiment.mirrors}")
        print(f"  configurations: {names}\n  paper setting: {experiment.paper_setting}")
        for claim in experiment.claims:
            print(f"  the paper claims: {claim.statement}")


def _seeds(args, experiment):
    return args.seeds or (1 if args.scale == QUICK else experiment.final_seeds)


def _tuning_seeds(args, experiment):
    """Seeds 0..N-1 run at every rate of a grid: at most the final seeds."""
    return min(args.tuning_seeds, _seeds(args, experiment))


def _validation_examples(args):
    if args.scale == QUICK:
        return VALIDATION_EXAMPLES[QUICK]
    offline = args.dataset in datasets.OFFLINE_DATASETS
    return VALIDATION_EXAMPLES["offline" if offline else "paper"]


def _base_argv(args, experiment, configuration):
    """The configuration's training flags under the protocol, bar rate, seed and output."""
    argv = list(experiment.train_flags(configuration, args.scale, args.dataset))
    argv += ["--validation-examples", str(_validation_examples(args)), "--recompute-statistics"]
    argv += ["--log-every-steps", str(LOG_EVERY_STEPS[args.scale])]
    return argv + (["--data-dir", args.data_dir] if args.data_dir else [])


def rates(args, experiment, configuration):
    """The configuration's learning-rate grid (its recipe's rate alone where it names none);
    the quick scale takes its first rate."""
    values = configuration.learning_rates or experiment.learning_rates
    if not values:
        values = (train_cli.parse_args(_base_argv(args, experiment, configuration)).learning_rate,)
    values = grid.check_grid(values)
    return values[:1] if args.scale == QUICK else values


def _run_dir(args, configuration, rate, seed):
    return os.path.join(
        args.output, args.name, "runs", configuration.name, grid.rate_label(rate), f"seed{seed}"
    )


def train_config(args, experiment, configuration, rate, seed):
    """The `TrainConfig` of one run: the configuration's flags under the protocol, its
    learning rate, seed and run directory."""
    config = train_cli.parse_args(_base_argv(args, experiment, configuration))
    return dataclasses.replace(
        config,
        # Pinned as the committed runs were trained (Keras' own choice, None, would compile
        # on JAX and change what a run directory records).
        jit_compile=bool(config.jit_compile),
        learning_rate=float(rate),
        seed=seed,
        verbose=0,
        output=_run_dir(args, configuration, rate, seed),
    )


def _finished(config):
    """Whether the run `config` describes has finished (its `metrics.json` is there).

    Raises:
        RuntimeError: if its directory holds a run trained with other flags (the
            experiment's spec changed since): its results would not be this run's.
    """
    try:
        config.check_run_dir(config.run_dir())
    except RunDirectoryError as error:
        raise RuntimeError(str(error)) from None
    return os.path.isfile(os.path.join(config.run_dir(), "metrics.json"))


def _train_plan(args, experiment, phase, plan):
    """Train each `(configuration, rate, seed)` of `plan` not finished yet, with its progress."""
    for index, (configuration, rate, seed) in enumerate(plan, 1):
        progress = (
            f"[{phase} {index}/{len(plan)}] {experiment.name} {configuration.name} "
            f"lr {rate:g} seed {seed}"
        )
        _train(progress, train_config(args, experiment, configuration, rate, seed))


def _train(progress, config):
    if _finished(config):
        print(f"{progress}: finished before, skipped", flush=True)
        return
    print(f"{progress}: training", flush=True)
    start = time.perf_counter()
    if train_cli.run(config) != 0:
        raise RuntimeError(f"{progress} failed; run the command again to resume")
    print(f"{progress}: done in {time.perf_counter() - start:.0f} s", flush=True)


def _validation_error(args, configuration, rate, seed):
    run = outcomes.read_run(_run_dir(args, configuration, rate, seed))
    return outcomes.outcome(run, "validation_error")


def _tuned(args, experiment, configuration, rate, tuning):
    """Whether the tuning seeds' runs at `rate` have finished (`_finished`)."""
    return all(
        _finished(train_config(args, experiment, configuration, rate, seed))
        for seed in range(tuning)
    )


def tuning_errors(args, experiment, configuration):
    """The configuration's grid as far as its finished tuning runs go, and what to train next.

    Returns:
        `(errors, next_rate)`: `errors` is `{rate: [validation error per
        tuning seed]}` over the grid's rates and each extension past its edge
        (`grid.extension`, at most `grid.MAX_EXTENSIONS`) whose tuning runs
        have finished, in increasing rate; `next_rate` the extension to train
        next, or None.
    """
    tuning = _tuning_seeds(args, experiment)

    def validation_errors(rate):
        return [_validation_error(args, configuration, rate, s) for s in range(tuning)]

    errors = {rate: validation_errors(rate) for rate in rates(args, experiment, configuration)}
    next_rate = None
    for _ in range(grid.MAX_EXTENSIONS):
        next_rate = grid.extension(errors)
        if next_rate is None or not _tuned(args, experiment, configuration, next_rate, tuning):
            break
        errors[next_rate], next_rate = validation_errors(next_rate), None
    return dict(sorted(errors.items())), next_rate


def chosen_rates(args, experiment):
    """`{configuration: (chosen rate, {rate: [validation error per tuning seed]})}` from the
    finished tuning runs (`tuning_errors`)."""
    chosen = {}
    for configuration in experiment.configurations:
        errors, _ = tuning_errors(args, experiment, configuration)
        chosen[configuration.name] = (grid.choose_rate(errors), errors)
    return chosen


def run_pairs(args, experiment):
    """Train the tuning runs (the grid, then any extension past its edge), choose each
    configuration's rate, then train its final seeds.

    Returns:
        `chosen_rates(args, experiment)`.

    Raises:
        RuntimeError: if a run fails (its own error is printed above).
    """
    tuning = _tuning_seeds(args, experiment)
    _train_plan(
        args,
        experiment,
        "tuning",
        [
            (configuration, rate, seed)
            for configuration in experiment.configurations
            for rate in rates(args, experiment, configuration)
            for seed in range(tuning)
        ],
    )
    while True:  # each round finishes one extension per configuration that needs one
        extensions = [
            (configuration, tuning_errors(args, experiment, configuration)[1])
            for configuration in experiment.configurations
        ]
        plan = [(c, rate, seed) for c, rate in extensions if rate for seed in range(tuning)]
        if not plan:
            break
        _train_plan(args, experiment, "tuning past the grid's edge", plan)
    chosen = chosen_rates(args, experiment)
    _train_plan(
        args,
        experiment,
        "final",
        [
            (configuration, chosen[configuration.name][0], seed)
            for configuration in experiment.configurations
            for seed in range(tuning, _seeds(args, experiment))
        ],
    )
    return chosen


def collect(args, experiment, chosen):
    """Every final run (each configuration at its chosen rate, every seed) as
    `{configuration: [read_run dict per seed]}`, and their history rows."""
    runs, rows = {}, []
    for configuration in experiment.configurations:
        rate = chosen[configuration.name][0]
        runs[configuration.name] = []
        for seed in range(_seeds(args, experiment)):
            run = outcomes.read_run(_run_dir(args, configuration, rate, seed))
            runs[configuration.name].append(run)
            for row in run["history"]:
                rows.append({"configuration": configuration.name, "seed": seed, **row})
    return runs, rows


def write_histories(rows, path):
    """Every row in one CSV; a column a configuration does not log stays empty."""
    fields = ["configuration", "seed", "epoch"]
    fields += sorted({k for row in rows for k in row} - set(fields))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _values(runs, name):
    """`{configuration: [outcome `name` per seed]}`."""
    return {c: [outcomes.outcome(run, name) for run in seeds] for c, seeds in runs.items()}


def interval_cell(values, digits=2):
    """`mean [low, high]` (95 % bootstrap interval over seeds), or `—` where not measured."""
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "—"
    mean, low, high = statistics.mean_interval(values)
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _converged(run):
    classes = run["metrics"].get("num_classes", 10)
    return outcomes.outcome(run, "final_training_loss") < CONVERGED_SHARE_OF_CHANCE * np.log(
        classes
    )


def _converged_cell(configuration_runs, errors):
    converged = [_converged(run) for run in configuration_runs]
    cell = f"{sum(converged)}/{len(converged)}"
    if 0 < sum(converged) < len(converged):
        kept = [e for e, ok in zip(errors, converged) if ok]
        cell += f" (their test error {np.mean(kept):.2f})"
    return cell


def results_table(args, experiment, runs, chosen):
    """The cells: each configuration's chosen rate, errors with intervals, losses, time."""
    n = _seeds(args, experiment)
    header = [
        "configuration",
        "learning rate (validation error % per rate)",
        f"test error % (n={n}, 95 % CI)",
        "test error % with running averages",
        "final training loss",
        "converged",
        "s / epoch",
    ]
    header += [result.source for result in experiment.paper_results]
    values = {
        name: _values(runs, name)
        for name in (
            "test_error",
            "test_error_running_averages",
            "final_training_loss",
            "epoch_time_s",
        )
    }
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for configuration in experiment.configurations:
        name = configuration.name
        rate, errors = chosen[name]
        tried = ", ".join(f"{r:g}: {np.mean(e):.1f}" for r, e in errors.items())
        edge = " at the grid's edge" if rate in (min(errors), max(errors)) else ""
        cells = [
            name,
            f"**{rate:g}**{edge} ({tried})" if len(errors) > 1 else f"{rate:g}",
            interval_cell(values["test_error"][name]),
            interval_cell(values["test_error_running_averages"][name]),
            interval_cell(values["final_training_loss"][name], 3),
            _converged_cell(runs[name], values["test_error"][name]),
            f"{np.mean(values['epoch_time_s'][name]):.2f}",
        ]
        cells += [
            f"{result.values[name]:.2f}" if name in result.values else ""
            for result in experiment.paper_results
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claim_verdicts(experiment, runs):
    """Each claim's verdict and its pairs' rows (dicts of VERDICT_FIELDS)."""
    results = []
    for claim in experiment.claims:
        compared = {c: runs[c] for c in claim.configurations()}
        values = _values(compared, claim.outcome)
        if min(len(v) for v in values.values()) < 2:
            results.append((claim, statistics.INCONCLUSIVE, []))
            continue
        second = _values(compared, claim.second_outcome) if claim.second_outcome else None
        verdict, pairs = claims_module.evaluate(claim, values, second)
        rows = [
            {
                "experiment": experiment.name,
                "claim": claim.statement,
                "outcome": claim.outcome
                + (f" vs {claim.second_outcome}" if claim.second_outcome else ""),
                "first": pair.first,
                "second": pair.second,
                "direction": claim.direction,
                "margin": "" if claim.margin is None else claim.margin,
                "n": pair.comparison.n,
                "effect": round(pair.comparison.effect, 4),
                "low": round(pair.comparison.low, 4),
                "high": round(pair.comparison.high, 4),
                "p": round(pair.comparison.p_value, 4),
                "p_holm": round(pair.p_holm, 4),
                "pair_verdict": pair.verdict,
                "claim_verdict": verdict,
            }
            for pair in pairs
        ]
        results.append((claim, verdict, rows))
    return results


def _direction_words(claim):
    if claim.direction == statistics.EQUIVALENT:
        return f"within ±{claim.margin:g}"
    return claim.direction


def claims_section(verdicts):
    """Markdown: per claim, "the paper claims X; we find Y", with each pair's statistic."""
    lines = []
    for claim, verdict, rows in verdicts:
        unit = outcomes.UNITS.get(claim.outcome, "")
        source = f" ({claim.source})" if claim.source else ""
        lines += [f"- The paper claims{source}: {claim.statement}. **We find: {verdict}.**"]
        if not rows:
            lines.append("  (fewer than 2 seeds: no test)")
        elif min(row["n"] for row in rows) < claims_module.MIN_SEEDS:
            lines.append(
                f"  (fewer than {claims_module.MIN_SEEDS} seeds: inconclusive, whatever the "
                "interval)"
            )
        for row in rows:
            lines.append(
                f"  - {row['first']} − {row['second']}, `{row['outcome']}` "
                f"({_direction_words(claim)} claimed): {row['effect']:+.3g}{unit} "
                f"[{row['low']:+.3g}, {row['high']:+.3g}], p = {row['p']:.3g} "
                f"(Holm {row['p_holm']:.3g}), n = {row['n']}: {row['pair_verdict']}"
            )
    return "\n".join(lines)


def write_verdicts(output, name, verdicts):
    """Replace experiment `name`'s rows of `OUTPUT/verdicts.csv`, keeping the others'."""
    path = os.path.join(output, VERDICTS_FILE)
    kept = []
    if os.path.isfile(path):
        with open(path) as f:
            kept = [row for row in csv.DictReader(f) if row["experiment"] != name]
    rows = list(kept)
    for claim, verdict, claim_rows in verdicts:
        # A claim with no pair compared (fewer than 2 seeds) still gets its row.
        rows += claim_rows or [
            {"experiment": name, "claim": claim.statement, "outcome": claim.outcome,
             "direction": claim.direction, "claim_verdict": verdict}
        ]  # fmt: skip
    order = {experiment: index for index, experiment in enumerate(EXPERIMENTS)}
    rows.sort(key=lambda row: order.get(row["experiment"], len(order)))  # stable: claim order
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=VERDICT_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _setting(args, experiment, chosen):
    seeds, tuning = _seeds(args, experiment), _tuning_seeds(args, experiment)
    grid_runs = sum(len(errors) * tuning for _, errors in chosen.values())
    final_runs = len(chosen) * (seeds - tuning)
    flags = " ".join(experiment.flags(args.scale, args.dataset))
    more = f"; then seeds {tuning}-{seeds - 1} at it" if seeds > tuning else ""
    return (
        f"Ours: `{args.dataset}` (split seed 0; the last {_validation_examples(args)} "
        f"training examples are the validation split, which chooses every setting; the test "
        f"split is read once per run, after training), `{flags}`. Learning rate chosen per "
        f"configuration by mean validation error over seeds 0-{tuning - 1}{more} (the tuning "
        f"seeds' runs at the chosen rate count among the final ones): {grid_runs} tuning runs "
        f"and {final_runs} more, seeds 0-{seeds - 1} in the cells (`--scale {args.scale}`). "
        "Test error with population statistics recomputed on the training split for models "
        "with batch statistics, the running averages' figure beside it. Intervals: 95 % "
        "bootstrap over seeds; comparisons paired by seed (sign-flip permutation p-values, "
        "Holm-corrected within a claim; a direction is supported or contradicted only where "
        f"the interval and the Holm p < {claims_module.ALPHA:g} agree). The papers: "
        f"{experiment.paper_setting}."
    )


def _reproduce(args, experiment, chosen):
    configuration = experiment.configurations[0]
    config = train_config(args, experiment, configuration, chosen[configuration.name][0], 0)
    return "keras-norms-train " + shlex.join(config.to_argv())


def report(args, experiment, chosen=None):
    """Write table.md, histories.csv, the figures, verdicts.csv and the index; returns the
    table's Markdown."""
    from keras_norms.training import figures

    chosen = chosen or chosen_rates(args, experiment)
    runs, rows = collect(args, experiment, chosen)
    directory = os.path.join(args.output, experiment.name)
    write_histories(rows, os.path.join(directory, "histories.csv"))
    verdicts = claim_verdicts(experiment, runs)
    write_verdicts(args.output, experiment.name, verdicts)
    sections = [
        f"## {experiment.name}: {experiment.topic}",
        "",
        f"Mirrors {experiment.mirrors}.",
        "",
        "### Verdicts",
        "",
        claims_section(verdicts) or "(no claim of this experiment is tested)",
        "",
        "### Results",
        "",
        _setting(args, experiment, chosen),
        "",
        results_table(args, experiment, runs, chosen),
        "",
        f"One cell's run: `{_reproduce(args, experiment, chosen)}`",
        "",
    ]
    sections += [analysis(args, experiment, runs) for analysis in experiment.analyses]
    for path, caption in figures.experiment_figures(experiment, runs, chosen, directory):
        sections.append(f"![{caption}]({os.path.basename(path)})\n")
    markdown = "\n".join(sections)
    with open(os.path.join(directory, "table.md"), "w") as f:
        f.write(markdown)
    write_index(args.output)
    return markdown


def write_index(output):
    """`OUTPUT/README.md`: every experiment reported under `output`, with its verdicts."""
    verdicts = {}
    path = os.path.join(output, VERDICTS_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            for row in csv.DictReader(f):
                verdicts.setdefault(row["experiment"], {})[row["claim"]] = row["claim_verdict"]
    lines = [
        "# Results",
        "",
        "Written by `keras-norms-experiment`; every number here comes from the runs under "
        "each experiment's `runs/`. Each line below is a paper's claim and the verdict our runs "
        "give it (supported / contradicted / inconclusive, from the 95 % interval of the effect "
        f"paired by seed and, for a direction, its Holm-adjusted p below {claims_module.ALPHA:g}; "
        "`verdicts.csv` "
        "has every statistic). To reproduce a paper's own "
        "setting on the full dataset: `keras-norms-experiment NAME --dataset cifar10`.",
        "",
    ]
    for name, experiment in EXPERIMENTS.items():
        if not os.path.isfile(os.path.join(output, name, "table.md")):
            continue
        lines.append(f"- [`{name}`]({name}/table.md): {experiment.topic}.")
        if name not in verdicts:
            lines.append(f"  Not yet run under this protocol: {UNTESTED}")
        for claim in experiment.claims:
            verdict = verdicts.get(name, {}).get(claim.statement)
            found = "not yet tested" if verdict is None else f"**we find: {verdict}**"
            lines.append(f"  - the paper claims {claim.statement}; {found}.")
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
            chosen = run_pairs(args, EXPERIMENTS[name])
        except RuntimeError as error:
            print(f"keras-norms-experiment: error: {error}", file=sys.stderr)
            return 1
        print(report(args, EXPERIMENTS[name], chosen))
    print(f"{', '.join(names)}: {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
