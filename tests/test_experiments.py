"""keras-norms-experiment: every experiment at `--scale quick`, resuming, and its report."""

import csv
import json
import os

import numpy as np
import pytest

from keras_norms.training import experiment_runner, experiments
from keras_norms.training.experiments import EXPERIMENTS, QUICK

# What each experiment's analyses add to its table.
ANALYSIS_SECTIONS = {
    "normprop": ("### Internal covariate shift", "internal_covariate_shift.png"),
    "init": ("### Variance at initialization", "variance_at_initialization.png"),
    "data_normalization": ("### Per-channel standard deviation estimators", None),
}


def test_list_names_every_experiment_and_its_source(capsys):
    assert experiment_runner.main(["--list"]) == 0
    out = capsys.readouterr().out
    for experiment in EXPERIMENTS.values():
        assert f"{experiment.name}: " in out and experiment.mirrors in out


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
    for column in experiment.curves:
        assert os.path.getsize(os.path.join(directory, f"{column}.png")) > 1000
    with open(os.path.join(directory, "table.md")) as f:
        table = f.read()
    assert experiment.paper_setting in table and "(n=1)" in table
    for configuration in experiment.configurations:
        run_dir = os.path.join(directory, "runs", configuration.name, "seed0")
        with open(os.path.join(run_dir, "metrics.json")) as f:
            error = 100 * (1 - json.load(f)["test_accuracy"])
        # One seed: the mean is the run's error and the spread 0.
        assert f"| {configuration.name} | {error:.2f} ± 0.00 |" in table
        for result in experiment.paper_results:
            if configuration.name in result.values:
                assert f"{result.values[configuration.name]:.2f}" in table
    heading, figure = ANALYSIS_SECTIONS.get(experiment.name, (None, None))
    assert (heading is not None) == bool(experiment.analyses)
    if heading:
        assert heading in table
    if figure:
        assert os.path.getsize(os.path.join(directory, figure)) > 1000
    with open(os.path.join(output, "README.md")) as f:
        assert f"[`{experiment.name}`]({experiment.name}/table.md)" in f.read()


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
    assert "(n=2)" in out


def test_all_runs_every_experiment_in_order(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(experiment_runner, "run_pairs", lambda args, e: ran.append(e.name))
    monkeypatch.setattr(experiment_runner, "report", lambda args, e: "")
    assert experiment_runner.main(["all", "--output", str(tmp_path)]) == 0
    assert ran == list(EXPERIMENTS)


def test_mean_and_spread_over_seeds():
    assert experiment_runner._mean_std([1.0, 2.0, 3.0]) == "2.00 ± 1.00"  # ddof=1
    assert experiment_runner._mean_std([4.0]) == "4.00 ± 0.00"


def _rows(configuration, means_by_seed):
    """History rows: means_by_seed[seed][epoch] is layer 1's input mean, layer 2's its negative."""
    return [
        {
            "configuration": configuration,
            "seed": seed,
            "epoch": epoch,
            "hidden_input_mean_1": value,
            "hidden_input_mean_2": -value,
        }
        for seed, values in enumerate(means_by_seed)
        for epoch, value in enumerate(values)
    ]


def test_hidden_input_means_average_over_seeds():
    means = experiments._hidden_input_means(_rows("a", [[1.0, 3.0], [3.0, 5.0]]), "a")
    assert means == {1: ([0, 1], [2.0, 4.0]), 2: ([0, 1], [-2.0, -4.0])}


def test_internal_covariate_shift_table(tmp_path):
    rows = []
    names = [c.name for c in experiments.NORMPROP.configurations]
    for name, values in zip(names, ([[0.1, 0.3]], [[1.0, -1.0]], [[2.0, 2.0]])):
        rows += _rows(name, values)
    for name in names[3:]:
        rows += _rows(name, [[0.0, 0.0]])
    (tmp_path / "normprop").mkdir()
    args = experiment_runner.build_parser().parse_args(["normprop", "--output", str(tmp_path)])
    markdown = experiments.internal_covariate_shift(args, experiments.NORMPROP, rows)
    # |final mean| averaged over the two layers; the spread is the std over epochs.
    assert f"| {names[0]} | 0.300 | 0.100 |" in markdown
    assert f"| {names[1]} | 1.000 | 1.000 |" in markdown
    assert f"| {names[2]} | 2.000 | 0.000 |" in markdown
    assert all(f"| {name} | 0.000 | 0.000 |" in markdown for name in names[3:])
    assert (tmp_path / "normprop" / "internal_covariate_shift.png").stat().st_size > 1000
