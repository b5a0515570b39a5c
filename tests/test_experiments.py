"""keras-norms-experiment: every experiment at `--scale quick`, resuming, the learning rate
chosen on the validation split, and the report with its verdicts."""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest

from keras_norms.training import experiment_runner, experiments, grid, statistics
from keras_norms.training.claims import Claim
from keras_norms.training.experiments import EXPERIMENTS, QUICK

# What each experiment's analyses add to its table.
ANALYSIS_SECTIONS = {
    "normprop": ("### Jacobian of the NormProp layers", "internal_covariate_shift.png"),
    "init": ("### Variance at initialization", "variance_at_initialization.png"),
    "data_normalization": ("### Per-channel standard deviation estimators", None),
}


def test_list_names_every_experiment_its_source_and_claims(capsys):
    assert experiment_runner.main(["--list"]) == 0
    out = capsys.readouterr().out
    for experiment in EXPERIMENTS.values():
        assert f"{experiment.name}: " in out and experiment.mirrors in out
        for claim in experiment.claims:
            assert f"the paper claims: {claim.statement}" in out


def test_a_name_is_required():
    with pytest.raises(SystemExit) as exit_info:
        experiment_runner.main([])
    assert exit_info.value.code == 2


def test_every_configuration_name_is_unique_and_every_paper_value_names_one():
    for experiment in EXPERIMENTS.values():
        names = [c.name for c in experiment.configurations]
        assert len(set(names)) == len(names)
        for result in experiment.paper_results:
            assert set(result.values) <= set(names), (experiment.name, result.source)


@pytest.fixture(scope="module")
def quick_output(tmp_path_factory):
    return str(tmp_path_factory.mktemp("experiments"))


@pytest.fixture(scope="module", params=sorted(EXPERIMENTS))
def quick_run(request, quick_output):
    """Each experiment at --scale quick, one seed."""
    argv = [request.param, "--scale", QUICK, "--seeds", "1", "--output", quick_output]
    assert experiment_runner.main(argv) == 0
    return EXPERIMENTS[request.param], quick_output, argv


def test_every_pair_is_trained_and_reported(quick_run):
    experiment, output, _ = quick_run
    directory = os.path.join(output, experiment.name)
    with open(os.path.join(directory, "histories.csv")) as f:
        rows = list(csv.DictReader(f))
    assert {r["configuration"] for r in rows} == {c.name for c in experiment.configurations}
    assert all(np.isfinite(float(r["loss"])) and float(r["epoch_time_s"]) > 0 for r in rows)
    panels = len(experiment.panels)
    figures = [f"curves_{k}.png" for k in range(1, panels + 1)] if panels else ["curves.png"]
    assert all(os.path.getsize(os.path.join(directory, name)) > 1000 for name in figures)
    with open(os.path.join(directory, "table.md")) as f:
        table = f.read()
    assert experiment.paper_setting in table and "(n=1, 95 % CI)" in table
    for configuration in experiment.configurations:
        (rate,) = experiment_runner.rates(
            _quick_args(output, experiment), experiment, configuration
        )
        run_dir = os.path.join(directory, "runs", configuration.name, f"lr{rate:g}", "seed0")
        with open(os.path.join(run_dir, "metrics.json")) as f:
            metrics = json.load(f)
        error = 100 * (1 - metrics["test_accuracy"])
        # One seed: the interval is the run's error itself.
        assert (
            f"| {configuration.name} | {rate:g} | {error:.2f} [{error:.2f}, {error:.2f}] |" in table
        )
        # The protocol: a validation split, both statistics where there are batch statistics.
        assert "validation_accuracy" in metrics
        with open(os.path.join(run_dir, "flags.json")) as f:
            flags = json.load(f)
        assert flags["recompute_statistics"] and flags["validation_examples"] > 0
        assert os.path.isfile(os.path.join(run_dir, "steps.csv"))
        for result in experiment.paper_results:
            if configuration.name in result.values:
                assert f"{result.values[configuration.name]:.2f}" in table
    for claim in experiment.claims:
        assert f"The paper claims ({claim.source}): {claim.statement}. **We find: " in table
    heading, figure = ANALYSIS_SECTIONS.get(experiment.name, (None, None))
    assert (heading is not None) == bool(experiment.analyses)
    if heading:
        assert heading in table
    if figure:
        assert os.path.getsize(os.path.join(directory, figure)) > 1000
    with open(os.path.join(output, "README.md")) as f:
        index = f.read()
    assert f"[`{experiment.name}`]({experiment.name}/table.md)" in index
    for claim in experiment.claims:
        assert f"the paper claims {claim.statement}; **we find: inconclusive**" in index


def _quick_args(output, experiment):
    argv = [experiment.name, "--scale", QUICK, "--seeds", "1", "--output", output]
    return experiment_runner.build_parser().parse_args(argv)


def test_every_claim_compares_configurations_of_its_experiment():
    for experiment in EXPERIMENTS.values():
        names = {c.name for c in experiment.configurations}
        assert experiment.claims, experiment.name
        for claim in experiment.claims:
            assert set(claim.configurations()) <= names, (experiment.name, claim.statement)
        for panel in experiment.panels:
            assert set(panel) <= names
        for configuration in experiment.configurations:
            grid.check_grid(configuration.learning_rates or experiment.learning_rates)


def test_a_finished_pair_is_skipped_and_a_new_seed_trained(tmp_path, capsys):
    output = str(tmp_path)
    argv = ["bn_test_phase", "--scale", QUICK, "--output", output]
    assert experiment_runner.main(argv + ["--seeds", "1"]) == 0
    capsys.readouterr()
    assert experiment_runner.main(argv + ["--seeds", "2"]) == 0
    out = capsys.readouterr().out
    count = len(experiments.BN_TEST_PHASE.configurations)
    assert out.count("seed 0: finished before, skipped") == count
    assert out.count("seed 1: training") == count
    assert "(n=2, 95 % CI)" in out
    # Two seeds: every claim is inconclusive, whatever its interval.
    assert out.count("**We find: inconclusive.**") == len(experiments.BN_TEST_PHASE.claims)


TINY = ("--epochs", "1", "--train-examples", "20", "--test-examples", "20", "--run-eagerly")
TINY_EXPERIMENT = experiments.Experiment(
    name="tiny",
    mirrors="nothing",
    topic="the protocol itself",
    configurations=(
        experiments.Configuration("a", ("--model", "convpool_cnn_c", "--norm", "none")),
        experiments.Configuration("b", ("--model", "convpool_cnn_c", "--norm", "bn"), (0.002,)),
    ),
    quick_flags=TINY,
    digits_flags=TINY + ("--init-batch-size", "20", "--width-multiplier", "0.25"),
    paper_flags=(),
    paper_setting="none",
    claims=(Claim("a beats b", "test_error", (("a", "b"),), "lower", source="here"),),
    learning_rates=(0.0001, 0.01),
    final_seeds=3,
)


def test_the_rate_is_chosen_on_validation_error_and_the_final_seeds_run_at_it(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(EXPERIMENTS, "tiny", TINY_EXPERIMENT)
    output = str(tmp_path)
    assert experiment_runner.main(["tiny", "--output", output, "--dataset", "digits"]) == 0
    runs = tmp_path / "tiny" / "runs"
    args = experiment_runner.build_parser().parse_args(
        ["tiny", "--output", output, "--dataset", "digits"]
    )
    chosen, errors = experiment_runner.chosen_rates(args, TINY_EXPERIMENT)["a"]
    assert {0.0001, 0.01} <= set(errors)  # the grid, and any extension past its edge
    for rate, values in errors.items():
        for seed in (0, 1):
            with open(runs / "a" / f"lr{rate:g}" / f"seed{seed}" / "metrics.json") as f:
                assert values[seed] == pytest.approx(
                    100 * (1 - json.load(f)["validation_accuracy"])
                )
    assert chosen == min(errors, key=lambda rate: (np.mean(errors[rate]), rate))
    assert (runs / "a" / f"lr{chosen:g}" / "seed2" / "metrics.json").is_file()
    assert not any((runs / "a" / f"lr{r:g}" / "seed2").exists() for r in errors if r != chosen)
    # b has a one-rate grid of its own: no tuning beyond its rate.
    assert sorted(p.name for p in (runs / "b").iterdir()) == ["lr0.002"]
    table = (tmp_path / "tiny" / "table.md").read_text()
    edge = " at the grid's edge" if chosen in (min(errors), max(errors)) else ""
    assert f"| a | **{chosen:g}**{edge} (" in table
    assert "| b | 0.002 |" in table
    with open(tmp_path / "verdicts.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["experiment"] == "tiny" and row["n"] == "3"
    assert row["claim_verdict"] == "inconclusive"  # 3 seeds < claims.MIN_SEEDS
    assert (tmp_path / "tiny" / "learning_rates.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "best, chosen, tried",
    [
        (0.3, 0.3, [0.01, 0.03, 0.1, 0.3, 0.9]),  # found past the edge, then inside
        (10.0, 0.9, [0.01, 0.03, 0.1, 0.3, 0.9]),  # still at the edge after MAX_EXTENSIONS
        (0.03, 0.03, [0.01, 0.03, 0.1]),  # inside the grid: no extension
    ],
)
def test_a_rate_chosen_at_the_grid_edge_extends_the_grid(
    tmp_path, monkeypatch, best, chosen, tried
):
    """Runs whose validation error is |log10(rate / best)|: the runner follows the edge."""
    trained = []

    def train(progress, config):
        rate, seed, output = config.learning_rate, config.seed, config.run_dir()
        trained.append((rate, seed))
        os.makedirs(output)
        error = abs(np.log10(rate / best))
        with open(os.path.join(output, "metrics.json"), "w") as f:
            json.dump({"validation_accuracy": 1 - error / 10}, f)
        with open(os.path.join(output, "history.csv"), "w") as f:
            f.write("epoch,loss\n")

    monkeypatch.setattr(experiment_runner, "_train", train)
    experiment = dataclasses.replace(
        TINY_EXPERIMENT,
        configurations=TINY_EXPERIMENT.configurations[:1],
        learning_rates=(0.01, 0.03, 0.1),
    )
    monkeypatch.setitem(EXPERIMENTS, "tiny", experiment)
    args = experiment_runner.build_parser().parse_args(["tiny", "--output", str(tmp_path)])
    rate, errors = experiment_runner.run_pairs(args, experiment)["a"]
    assert rate == chosen and list(errors) == tried
    assert sorted({r for r, seed in trained if seed < 2}) == tried  # two tuning seeds each
    assert sorted(seed for r, seed in trained if r == chosen) == [0, 1, 2]  # then the finals


def test_all_runs_every_experiment_in_order(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(experiment_runner, "run_pairs", lambda args, e: ran.append(e.name))
    monkeypatch.setattr(experiment_runner, "report", lambda args, e, chosen: "")
    assert experiment_runner.main(["all", "--output", str(tmp_path)]) == 0
    assert ran == list(EXPERIMENTS)


def test_interval_cell_gives_the_mean_and_its_bootstrap_interval():
    assert experiment_runner.interval_cell([4.0]) == "4.00 [4.00, 4.00]"
    assert experiment_runner.interval_cell([float("nan")]) == "—"
    mean, low, high = statistics.mean_interval([1.0, 2.0, 3.0, 4.0])
    assert experiment_runner.interval_cell([1.0, 2.0, 3.0, 4.0]) == (
        f"{mean:.2f} [{low:.2f}, {high:.2f}]"
    )


def _covariate_run(values):
    """A run whose layer 1's input mean (std 2) is `values` (before training, then per epoch),
    layer 2's its negative (std 1)."""
    rows = [
        {"hidden_input_mean_1": 2.0 * v, "hidden_input_std_1": 2.0,
         "hidden_input_mean_2": -v, "hidden_input_std_2": 1.0}
        for v in values
    ]  # fmt: skip
    return {"metrics": {"hidden_inputs_before_training": rows[0]}, "history": rows[1:], "steps": []}


def test_internal_covariate_shift_table(tmp_path):
    names = [c.name for c in experiments.NORMPROP.configurations]
    runs = {name: [_covariate_run([0.0, 0.0, 0.0])] for name in names[3:]}
    runs[names[0]] = [_covariate_run([0.0, 0.1, 0.3]), _covariate_run([0.0, 0.1, 0.1])]
    runs[names[1]] = [_covariate_run([1.0, 1.0, -1.0])]
    runs[names[2]] = [_covariate_run([2.0, 2.0, 2.0])]
    (tmp_path / "normprop").mkdir()
    args = experiment_runner.build_parser().parse_args(["normprop", "--output", str(tmp_path)])
    markdown = experiments.internal_covariate_shift(args, experiments.NORMPROP, runs)
    # |final standardized mean| of the mean over seeds; the shift is the std over the
    # measurements (before training included), its mean over seeds.
    shift = (np.std([0.0, 0.1, 0.3]) + np.std([0.0, 0.1, 0.1])) / 2
    assert f"| {names[0]} | 0.200 | {shift:.3f} |" in markdown
    assert f"| {names[1]} | 1.000 | {np.std([1, 1, -1]):.3f} |" in markdown
    assert f"| {names[2]} | 2.000 | 0.000 |" in markdown
    assert all(f"| {name} | 0.000 | 0.000 |" in markdown for name in names[3:])
    assert (tmp_path / "normprop" / "internal_covariate_shift.png").stat().st_size > 1000


def test_normprop_jacobian_table_means_over_seeds():
    def run(before, after):
        metrics = {"normprop_jacobian_before_training": {"c1": before, "c2": before / 2}}
        metrics["normprop_jacobian"] = {"c1": after, "c2": after / 2}
        return {"metrics": metrics, "history": [], "steps": []}

    runs = {"a": [run(1.0, 0.8), run(1.2, 1.0)], "b": [run(0.8, 2.0)], "none": [_no_jacobian()]}
    markdown = experiments.normprop_jacobian(None, experiments.NORMPROP, runs)
    assert "| layer | before training | a | b |" in markdown  # "none" has no NormProp layer
    assert "| c1 | 0.950 | 0.900 | 2.000 |" in markdown  # before: mean of a's 1.1 and b's 0.8
    assert "| c2 | 0.475 | 0.450 | 1.000 |" in markdown
    assert experiments.normprop_jacobian(None, experiments.NORMPROP, {"x": [_no_jacobian()]}) == ""


def _no_jacobian():
    return {"metrics": {}, "history": [], "steps": []}
