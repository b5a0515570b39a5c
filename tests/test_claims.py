"""Claims, outcomes and the learning-rate grid: verdicts on runs whose numbers are known."""

import math

import numpy as np
import pytest

from keras_norms.training import claims, grid, outcomes
from keras_norms.training.claims import Claim


def _run(history=(), steps=(), **metrics):
    return {"metrics": metrics, "history": list(history), "steps": list(steps)}


def test_errors_are_percent_and_running_averages_are_nan_without_batch_statistics():
    run = _run(test_accuracy=0.9, validation_accuracy=0.8, test_accuracy_running_averages=0.5)
    assert outcomes.outcome(run, "test_error") == pytest.approx(10.0)
    assert outcomes.outcome(run, "validation_error") == pytest.approx(20.0)
    assert outcomes.outcome(run, "test_error_running_averages") == pytest.approx(50.0)
    assert math.isnan(outcomes.outcome(run, "validation_error_running_averages"))


def test_per_step_outcomes_against_the_curve_by_hand():
    steps = [{"step": s, "loss": loss} for s, loss in ((10, 2.0), (20, 1.0), (30, 0.4), (40, 0.2))]
    history = [{"loss": 1.5, "epoch_time_s": 3.0}, {"loss": 0.3, "epoch_time_s": 1.0}]
    run = _run(history, steps)
    # Trapezoids: (2 + 1)/2 * 10 + (1 + 0.4)/2 * 10 + (0.4 + 0.2)/2 * 10 = 25, over 30 steps.
    assert outcomes.outcome(run, "mean_training_loss") == pytest.approx(25 / 30)
    assert outcomes.outcome(run, "steps_to_training_loss_0.5") == 30
    assert outcomes.outcome(run, "steps_to_training_loss_0.1") == 50  # never: one interval past
    assert outcomes.outcome(run, "final_training_loss") == 0.3
    assert outcomes.outcome(run, "epoch_time_s") == 1.0  # the first epoch traces: left out


def _hidden_inputs(m1, m2, std1=2.0, std2=0.5):
    return {"hidden_input_mean_1": m1, "hidden_input_std_1": std1, "hidden_input_mean_2": m2,
            "hidden_input_std_2": std2}  # fmt: skip


def test_hidden_input_shift_is_the_spread_of_the_input_mean_in_units_of_its_std():
    run = _run(
        [_hidden_inputs(2.0, 0.5), _hidden_inputs(2.0, 0.5)],
        hidden_inputs_before_training=_hidden_inputs(-1.0, -0.25),
    )
    # Layer 1: means -1, 2, 2 over a std of 2 throughout: -0.5, 1, 1; layer 2 the same. The
    # measurement before training counts.
    curves = outcomes.hidden_input_curve(run)
    np.testing.assert_allclose(curves[1], [-0.5, 1.0, 1.0])
    np.testing.assert_allclose(curves[2], [-0.5, 1.0, 1.0])
    assert outcomes.outcome(run, "hidden_input_shift") == pytest.approx(np.std([-0.5, 1, 1]))
    # One scale per unit, the RMS of its stds: a unit that dies (std ~0) stays finite.
    dying = _run(
        [_hidden_inputs(0.0, 1e-9, std1=0.0, std2=1e-9)],
        hidden_inputs_before_training=_hidden_inputs(2.0, 1.0, std1=2.0, std2=1.0),
    )
    curves = outcomes.hidden_input_curve(dying)
    np.testing.assert_allclose(curves[1], [2.0, 0.0] / np.sqrt(2.0))
    np.testing.assert_allclose(curves[2], [1.0, 1e-9] / np.sqrt(0.5), atol=1e-8)
    # A constant input (std 0 throughout) has nothing to shift.
    constant = _hidden_inputs(0.0, 3.0, std2=0.0)
    constant_run = _run([constant], hidden_inputs_before_training=constant)
    np.testing.assert_array_equal(outcomes.hidden_input_curve(constant_run)[2], [0.0, 0.0])
    with pytest.raises(ValueError, match="--track-hidden-inputs"):
        outcomes.outcome(_run([_hidden_inputs(0.0, 0.0)]), "hidden_input_shift")


def test_unknown_outcomes_and_missing_logs_are_named():
    with pytest.raises(ValueError, match="Received: 'accuracy'"):
        outcomes.check_name("accuracy")
    with pytest.raises(ValueError, match="needs steps.csv"):
        outcomes.outcome(_run([{"loss": 1.0}]), "mean_training_loss")


def _claim(direction="lower", margin=None, pairs=(("a", "b"),)):
    return Claim("a is better", "test_error", pairs, direction, margin)


def test_a_consistent_gain_over_eight_seeds_is_supported_and_its_reverse_contradicted():
    b = list(np.random.default_rng(0).normal(10.0, 3.0, size=8))
    a = [v - 1.0 for v in b]
    verdict, (pair,) = claims.evaluate(_claim(), {"a": a, "b": b})
    assert verdict == "supported" and pair.comparison.effect == pytest.approx(-1.0)
    assert pair.p_holm == pytest.approx(2 / 256)
    assert claims.evaluate(_claim("higher"), {"a": a, "b": b})[0] == "contradicted"
    assert claims.evaluate(_claim("equivalent", 0.5), {"a": a, "b": b})[0] == "contradicted"
    assert claims.evaluate(_claim("equivalent", 2.0), {"a": a, "b": b})[0] == "supported"


def test_noise_is_inconclusive_and_so_are_too_few_seeds():
    rng = np.random.default_rng(1)
    a, b = list(rng.normal(size=8)), list(rng.normal(size=8))
    assert claims.evaluate(_claim(), {"a": a, "b": b})[0] == "inconclusive"
    few = claims.MIN_SEEDS - 1
    verdict, (pair,) = claims.evaluate(_claim(), {"a": [0.0] * few, "b": [5.0] * few})
    assert verdict == "inconclusive" and pair.comparison.high < 0


def test_a_pair_whose_holm_adjusted_p_is_not_below_alpha_is_inconclusive():
    """Five seeds all one way: p = 2/32 = 0.0625 > 0.05 although the interval excludes zero."""
    b = [10.0, 11.0, 12.0, 13.0, 14.0]
    verdict, (pair,) = claims.evaluate(_claim(), {"a": [v - 1 for v in b], "b": b})
    assert pair.comparison.high < 0 and pair.p_holm == pytest.approx(2 / 32)
    assert verdict == "inconclusive"


def test_one_contradicted_pair_contradicts_the_claim_and_holm_adjusts_the_family():
    b = [10.0 + k for k in range(8)]
    values = {"a": [v - 1 for v in b], "b": b, "c": [v - 2 for v in b]}
    verdict, pairs = claims.evaluate(_claim(pairs=(("a", "b"), ("a", "c"))), values)
    assert [p.verdict for p in pairs] == ["supported", "contradicted"]
    assert verdict == "contradicted"
    assert [p.p_holm for p in pairs] == pytest.approx([2 * 2 / 256, 2 * 2 / 256])


def test_a_pair_with_an_outcome_it_does_not_have_is_left_out():
    values = {"a": [1.0] * 8, "b": [float("nan")] * 8}
    assert claims.evaluate(_claim(), values) == ("inconclusive", [])


def test_claims_check_their_fields():
    with pytest.raises(ValueError, match="Unknown outcome"):
        Claim("x", "accuracy", (("a", "b"),), "lower")
    with pytest.raises(ValueError, match="positive margin"):
        Claim("x", "test_error", (("a", "b"),), "equivalent")
    with pytest.raises(ValueError, match="pairs of two names"):
        Claim("x", "test_error", (("a",),), "lower")


def test_the_rate_with_the_lowest_mean_validation_error_is_chosen():
    assert grid.choose_rate({0.001: [10.0, 12.0], 0.003: [9.0, 11.5], 0.01: [30.0, 5.0]}) == 0.003
    assert grid.choose_rate({0.01: [5.0, 5.0], 0.001: [5.0, 5.0]}) == 0.001  # a tie: smaller
    assert grid.choose_rate({0.01: [float("nan"), 1.0], 0.1: [50.0, 50.0]}) == 0.1  # diverged
    assert grid.rate_label(0.003) == "lr0.003" and grid.rate_label(1e-4) == "lr0.0001"


def test_a_rate_chosen_at_an_edge_and_better_than_its_neighbour_extends_the_grid():
    # One log step past the edge, the step rounded to one significant digit.
    assert grid.extension({0.01: [5.0, 5.0], 0.03: [4.0, 4.0], 0.1: [3.0, 3.0]}) == 0.3
    assert grid.extension({0.001: [3.0], 0.003: [4.0], 0.01: [5.0]}) == 0.0003
    assert grid.extension({0.1: [3.0], 0.3: [float("nan")]}) == 0.03  # the neighbour diverged
    assert grid.extension({0.01: [5.0], 0.03: [3.0], 0.1: [4.0]}) is None  # inside
    assert grid.extension({0.001: [90.0, 90.0], 0.003: [90.0, 90.0]}) is None  # flat: chance
    assert grid.extension({0.01: [4.0]}) is None  # one rate
    assert grid.extension({0.3: [9.0], 0.9: [8.0], 1.0: [7.0]}) is None  # 1.1 rounds to 1


@pytest.mark.parametrize("rates", [(), (0.1, 0.1), (0.0,), (float("inf"),), (True,)])
def test_bad_grids_are_refused(rates):
    with pytest.raises(ValueError, match="learning-rate grid"):
        grid.check_grid(rates)
