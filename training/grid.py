"""Learning rate chosen per configuration on the validation split.

Each configuration is trained at every rate of its grid for the tuning seeds
(`0 .. tuning_seeds - 1`); its rate is the one with the lowest mean
validation error (population statistics for batch-statistics models), the
smaller rate on a tie. A rate chosen at an edge of the grid, and strictly
better than its neighbour there, says the best rate may lie beyond: the grid
grows by one log step past that edge (`extension`), at most `MAX_EXTENSIONS`
times per configuration, and the choice is made again. The final seeds run at
the chosen rate, and the tuning seeds' runs at it count among them. The test
split chooses nothing.
"""

import math

import numpy as np


def check_grid(rates):
    """`rates` as a tuple of positive floats, as given (a grid is log-spaced by the spec).

    Raises:
        ValueError: for an empty grid, a repeated rate or a rate that is not
            a positive finite number.
    """
    rates = tuple(rates)
    if not rates or any(
        isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < math.inf
        for r in rates
    ):
        raise ValueError(f"A learning-rate grid holds positive numbers. Received: {rates!r}")
    if len(set(rates)) != len(rates):
        raise ValueError(f"A learning-rate grid holds each rate once. Received: {rates!r}")
    return rates


def choose_rate(validation_errors):
    """The rate with the lowest mean validation error, the smaller rate on a tie.

    Args:
        validation_errors: `{rate: [validation error of each tuning seed]}`;
            a NaN (a run that diverged) counts as the worst error.

    Returns:
        The chosen rate (a key of `validation_errors`).
    """

    def score(rate):
        return (_mean(validation_errors[rate]), rate)

    return min(validation_errors, key=score)


MAX_EXTENSIONS = 2


def _mean(errors):
    errors = np.asarray(errors, "float64")
    return np.inf if errors.size == 0 or np.any(np.isnan(errors)) else errors.mean()


def extension(validation_errors):
    """The rate to try next when `choose_rate` picks an edge of the grid, or None.

    The chosen rate is at the smallest or the largest rate tried and its mean
    validation error is strictly below its neighbour's: one step beyond it,
    the step being the ratio between the edge and its neighbour, rounded to one
    significant digit (0.1 after 0.03 and 0.1 gives 0.3). None inside the grid,
    on a tie with the neighbour (a flat edge: every rate at chance, say), for a
    one-rate grid, or when the rounded rate was tried already.

    Args:
        validation_errors: as `choose_rate`'s.
    """
    if len(validation_errors) < 2:
        return None
    chosen = choose_rate(validation_errors)
    ordered = sorted(validation_errors)
    if chosen not in (ordered[0], ordered[-1]):
        return None
    neighbour = ordered[1] if chosen == ordered[0] else ordered[-2]
    if not _mean(validation_errors[chosen]) < _mean(validation_errors[neighbour]):
        return None
    rate = float(f"{chosen * chosen / neighbour:.1g}")
    return None if rate in validation_errors else rate


def rate_label(rate):
    """The run directory name of a rate, e.g. `lr0.003`."""
    return f"lr{rate:g}"
