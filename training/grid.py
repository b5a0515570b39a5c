"""Learning rate chosen per configuration on the validation split.

Each configuration is trained at every rate of its grid for the tuning seeds
(`0 .. tuning_seeds - 1`); its rate is the one with the lowest mean
validation error (population statistics for batch-statistics models), the
smaller rate on a tie. The final seeds run at that rate, and the tuning seeds'
runs at it count among them. The test split chooses nothing.
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
        errors = np.asarray(validation_errors[rate], "float64")
        mean = np.inf if errors.size == 0 or np.any(np.isnan(errors)) else errors.mean()
        return (mean, rate)

    return min(validation_errors, key=score)


def rate_label(rate):
    """The run directory name of a rate, e.g. `lr0.003`."""
    return f"lr{rate:g}"
