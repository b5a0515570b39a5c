"""The experiments' statistics against independent references: intervals, paired tests, Holm."""

import itertools

import numpy as np
import pytest

from keras_norms.training import statistics
from keras_norms.training.statistics import CONTRADICTED, INCONCLUSIVE, SUPPORTED


def test_bootstrap_interval_of_many_normal_values_matches_the_normal_interval():
    values = np.random.default_rng(0).normal(3.0, 2.0, size=400)
    mean, low, high = statistics.mean_interval(values)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert mean == pytest.approx(values.mean())
    assert low == pytest.approx(mean - half_width, abs=0.1 * half_width)
    assert high == pytest.approx(mean + half_width, abs=0.1 * half_width)


def test_bootstrap_interval_of_one_value_or_equal_values_is_the_value():
    assert statistics.mean_interval([2.5]) == (2.5, 2.5, 2.5)
    assert statistics.mean_interval([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("values", [[], [1.0, float("nan")], [[1.0, 2.0]]])
def test_bad_values_are_refused(values):
    with pytest.raises(ValueError, match="mean_interval expects"):
        statistics.mean_interval(values)


def _exact_sign_flip_p_value(differences):
    """Every one of the 2^n sign flips, enumerated: the share at least as extreme."""
    observed = abs(np.mean(differences))
    flips = [
        abs(np.mean(np.array(signs) * differences))
        for signs in itertools.product((1, -1), repeat=len(differences))
    ]
    return np.mean(np.array(flips) >= observed - 1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_p_value_is_the_exact_sign_flip_test(seed):
    rng = np.random.default_rng(seed)
    b = rng.normal(size=8)
    a = b + rng.normal(0.5, 1.0, size=8)
    comparison = statistics.paired_comparison(a, b)
    assert comparison.p_value == pytest.approx(_exact_sign_flip_p_value(a - b))
    assert comparison.effect == pytest.approx(np.mean(a - b))
    assert comparison.low < comparison.effect < comparison.high
    assert comparison.n == 8


def test_pairing_removes_the_seed_to_seed_spread():
    """A constant gain on top of a large per-seed spread: the paired interval excludes zero."""
    per_seed = np.random.default_rng(3).normal(0.0, 10.0, size=8)
    comparison = statistics.paired_comparison(per_seed - 1.0, per_seed + 0.01 * np.arange(8))
    assert comparison.high < 0 and comparison.p_value == pytest.approx(2 / 256)
    assert statistics.paired_comparison([1.0, 2.0], [1.0, 2.0]).p_value == 1.0


def test_paired_comparison_needs_pairs():
    with pytest.raises(ValueError, match="Received: lengths 3 and 2"):
        statistics.paired_comparison([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="Received: lengths 1 and 1"):
        statistics.paired_comparison([1.0], [2.0])


def test_holm_matches_the_step_down_by_hand():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06.
    assert statistics.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert statistics.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert statistics.holm([0.2]) == pytest.approx([0.2])


@pytest.mark.parametrize(
    "low, high, direction, margin, expected",
    [
        (-2.0, -0.5, "lower", None, SUPPORTED),
        (0.5, 2.0, "lower", None, CONTRADICTED),
        (-1.0, 1.0, "lower", None, INCONCLUSIVE),
        (0.5, 2.0, "higher", None, SUPPORTED),
        (-2.0, -0.5, "higher", None, CONTRADICTED),
        (-0.3, 0.4, "equivalent", 0.5, SUPPORTED),
        (0.6, 2.0, "equivalent", 0.5, CONTRADICTED),
        (-2.0, -0.6, "equivalent", 0.5, CONTRADICTED),
        (-0.3, 0.9, "equivalent", 0.5, INCONCLUSIVE),
    ],
)
def test_verdict_comes_from_the_interval(low, high, direction, margin, expected):
    assert statistics.verdict(low, high, direction, margin) == expected


def test_verdict_refuses_an_unknown_direction_and_an_equivalence_without_margin():
    with pytest.raises(ValueError, match="Received: 'better'"):
        statistics.verdict(0.0, 1.0, "better")
    with pytest.raises(ValueError, match="positive margin for an equivalence. Received: None"):
        statistics.verdict(0.0, 1.0, "equivalent")
