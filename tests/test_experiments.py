"""keras-norms-experiment: every experiment at `--scale quick`, resuming, and its report."""

import csv
import json
import os

import numpy as np
import pytest

from keras_norms.training import experiment_runner
from keras_norms.training.experiments import EXPERIMENTS, QUICK


def test_list_names_every_experiment_and_its_source(capsys):
    assert experiment_runner.main(["--list"]) == 0
    out = capsys.readouterr().out
    for experiment in EXPERIMENTS.values():
        assert f"{experiment.name}: " in out and experiment.mirrors in out


def test_a_name_is_required():
    with pytest.raises(SystemExit) as exit_info:
        experiment_runner.main([])
    assert exit_info.value.code == 2


@pytest.fixture(scope="module", params=sorted(EXPERIMENTS))
def quick_run(request, tmp_path_factory):
    """Each experiment at --scale quick, one seed, then run again (nothing left to train)."""
    output = str(tmp_path_factory.mktemp("experiments"))
    argv = [request.param, "--scale", QUICK, "--seeds", "1", "--output", output]
    assert experiment_runner.main(argv) == 0
    return EXPERIMENTS[request.param], output, argv


def test_every_pair_is_trained_and_reported(quick_run):
    experiment, output, _ = quick_run
    directory = os.path.join(output, experiment.name)
    with open(os.path.join(directory, "histories.csv")) as f:
        rows = list(csv.DictReader(f))
    assert {r["configuration"] for r in rows} == {c.name for c in experiment.configurations}
    assert all(np.isfinite(float(r["loss"])) and float(r["epoch_time_s"]) > 0 for r in rows)
    assert os.path.getsize(os.path.join(directory, "training_loss.png")) > 1000
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


def test_a_finished_pair_is_skipped_and_a_new_seed_trained(quick_run, capsys):
    experiment, output, argv = quick_run
    capsys.readouterr()
    assert experiment_runner.main(argv[:-4] + ["--seeds", "2", "--output", output]) == 0
    out = capsys.readouterr().out
    count = len(experiment.configurations)
    assert out.count("seed 0: finished before, skipped") == count
    assert out.count("seed 1: training") == count
    assert "(n=2)" in out


def test_mean_and_spread_over_seeds():
    assert experiment_runner._mean_std([1.0, 2.0, 3.0]) == "2.00 ± 1.00"  # ddof=1
    assert experiment_runner._mean_std([4.0]) == "4.00 ± 0.00"
