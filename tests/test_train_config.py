"""TrainConfig: the command line's data, flags.json's contents, the runs' configuration."""

import csv
import dataclasses
import glob
import json
import os

import pytest

from keras_norms.training import cli
from keras_norms.training.config import CHOICES, FIELD_GROUPS, RUN_FLAGS, ConfigError, TrainConfig

RESULTS = os.path.join(os.path.dirname(__file__), os.pardir, "results")
# Tiny runs of the training command; their per-step losses (steps.csv) as the command gave
# them before TrainConfig (commit 353617e, TensorFlow backend, this machine's CPU).
TINY = [
    "--epochs", "1", "--train-examples", "60", "--test-examples", "20", "--batch-size", "20",
    "--init-batch-size", "20", "--log-every-steps", "1", "--verbose", "0",
]  # fmt: skip
FIRST_AND_LAST_LOSS_BEFORE = {
    ("--model", "convpool_cnn_c", "--width-multiplier", "0.25", "--seed", "3"): (
        3.0206539630889893,
        2.613348960876465,
    ),
    ("--model", "all_cnn_c", "--image-size", "16", "--width-multiplier", "0.25", "--seed", "1"): (
        2.4041450023651123,
        2.2793235778808594,
    ),
    (
        "--model",
        "nin",
        "--width-multiplier",
        "0.1",
        "--seed",
        "2",
        "--data-normalization",
        "batch",
    ): (
        2.6079294681549072,
        2.3844611644744873,
    ),
}


def _committed_flags():
    paths = sorted(glob.glob(os.path.join(RESULTS, "**", "flags.json"), recursive=True))
    assert len(paths) > 400  # every committed run
    for path in paths:
        with open(path) as f:
            yield path, json.load(f)


def test_every_committed_run_reads_back_and_parses_back_unchanged():
    for path, flags in _committed_flags():
        config = TrainConfig.from_run_flags(flags)
        assert config.resolved().run_flags() == flags, path
        assert cli.parse_args(config.to_argv()).run_flags() == flags, path


def test_the_command_line_has_one_flag_per_field_in_its_group():
    parser = cli.build_parser()
    dests = {action.dest for action in parser._actions} - {"help"}
    assert dests == {field.name for field in dataclasses.fields(TrainConfig)}
    for group in parser._action_groups[2:]:  # after argparse's positionals and options
        for action in group._group_actions:
            assert group.title == f"{FIELD_GROUPS[action.dest]} flags", action.dest
    assert set(RUN_FLAGS) <= dests


def test_flags_not_given_take_the_fields_defaults():
    assert cli.parse_args([]) == TrainConfig().resolved()
    assert cli.parse_args(["--no-data-init"]).data_init is False


def test_each_flag_offers_its_fields_choices():
    choices = {action.dest: action.choices for action in cli.build_parser()._actions}
    assert {name: choices[name] for name in CHOICES} == CHOICES
    assert CHOICES["data_normalization"] == ("batch", "global")  # nin's, from the registry


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_a_config_built_in_code_refuses_a_value_outside_its_fields_choices(name):
    """Not only the parser: a TrainConfig made by the runner or a user is checked too."""
    flag = "--" + name.replace("_", "-")
    with pytest.raises(ConfigError, match=rf"argument {flag}: invalid choice: 'bogus' \(choose"):
        TrainConfig(**{name: "bogus"}).resolved()


def test_an_unknown_key_in_flags_json_is_refused():
    with pytest.raises(ValueError, match=r"Received: \['momentum'\]"):
        TrainConfig.from_run_flags({"model": "nin", "momentum": 0.9})


@pytest.mark.parametrize("flags", list(FIRST_AND_LAST_LOSS_BEFORE))
def test_the_same_flags_and_seed_give_the_losses_of_before(flags, tmp_path):
    assert cli.main(list(flags) + TINY + ["--output", str(tmp_path)]) == 0
    with open(tmp_path / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    losses = (float(rows[0]["loss"]), float(rows[-1]["loss"]))
    assert losses == pytest.approx(FIRST_AND_LAST_LOSS_BEFORE[flags], rel=1e-5)
