"""Statistics of an experiment's runs: intervals, paired comparisons and verdicts.

Each number an experiment reports is one outcome per seed. A cell gives the
mean and its 95 % bootstrap confidence interval over seeds; two configurations
are compared paired by seed (the same seed draws the same initialization and
batch order for both): the effect is the mean of the per-seed differences,
with its 95 % bootstrap interval and the p-value of a paired permutation test
(every sign flip of the differences; exact up to 2^13 flips), Holm-corrected
over a claim's comparisons. The verdict comes from the interval alone
(`verdict`). scipy does the resampling and the permutations.
"""

import dataclasses

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 9999
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
# A claim's direction: the first configuration's metric below, above or within a margin of
# the second's.
LOWER, HIGHER, EQUIVALENT = "lower", "higher", "equivalent"
DIRECTIONS = (LOWER, HIGHER, EQUIVALENT)


def _finite(values, what):
    values = np.asarray(values, "float64")
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError(f"{what} expects a 1-D array of finite numbers. Received: {values!r}")
    return values


def mean_interval(values, confidence=CONFIDENCE, seed=0):
    """The mean of `values` (one per seed) and its bootstrap confidence interval.

    Percentile bootstrap of the mean (`scipy.stats.bootstrap`, 9,999
    resamples, `seed`); one value, or values all equal, give the value itself
    as both ends (nothing varies). Returns `(mean, low, high)`, floats.

    Raises:
        ValueError: for an empty, non-finite or not 1-D `values`.
    """
    from scipy import stats

    values = _finite(values, "mean_interval")
    if values.size == 0:
        raise ValueError("mean_interval expects at least one value. Received: []")
    mean = float(values.mean())
    if values.size == 1 or np.all(values == values[0]):
        return mean, mean, mean
    result = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return mean, float(interval.low), float(interval.high)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """`a - b` paired by seed: the mean difference, its interval and its p-value."""

    effect: float
    low: float
    high: float
    p_value: float
    n: int


def paired_comparison(a, b, confidence=CONFIDENCE, seed=0):
    """Compare `a` with `b`, one value per seed each, paired by position (seed).

    The effect is the mean of `a - b`, its interval the bootstrap interval of
    that mean (`mean_interval`); the p-value is two-sided, from
    `scipy.stats.permutation_test` flipping the sign of each difference
    (exact: every flip, for up to 13 seeds).

    Raises:
        ValueError: if `a` and `b` differ in length, hold fewer than 2
            values, or are not finite.
    """
    from scipy import stats

    a, b = _finite(a, "paired_comparison"), _finite(b, "paired_comparison")
    if a.shape != b.shape or a.size < 2:
        raise ValueError(
            "paired_comparison expects two equal-length sequences of at least 2 values "
            f"(one per seed). Received: lengths {a.size} and {b.size}"
        )
    differences = a - b
    effect, low, high = mean_interval(differences, confidence, seed)
    if np.all(differences == 0):
        p_value = 1.0
    else:
        p_value = stats.permutation_test(
            (differences,),
            lambda d, axis: np.mean(d, axis=axis),
            permutation_type="samples",
            n_resamples=2**13,
            alternative="two-sided",
            rng=np.random.default_rng(seed),
        ).pvalue
    return Comparison(effect, low, high, float(p_value), int(a.size))


def holm(p_values):
    """Holm's step-down adjustment of `p_values` (one family), in their order.

    The k-th smallest of m p-values becomes `max over j <= k of (m - j + 1) p_(j)`, at
    most 1 (Holm 1979). scipy has only Benjamini-Hochberg (`false_discovery_control`);
    statsmodels' `multipletests` would bring pandas and patsy for these lines.
    """
    p = np.asarray(p_values, "float64")
    order = np.argsort(p, kind="stable")
    m = len(p)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted.tolist()


def verdict(low, high, direction, margin=None):
    """A claim's verdict from the effect's interval `[low, high]` (effect: first minus second).

    `direction` `"lower"` (the claim: the first below the second) is
    supported when the whole interval is below zero, contradicted when it is
    all above, inconclusive when it holds zero; `"higher"` the other way.
    `"equivalent"` (the claim: they match within `margin`, in the metric's
    unit) is supported when the interval lies inside `[-margin, margin]`,
    contradicted when it lies wholly outside it, and inconclusive otherwise.

    Raises:
        ValueError: for an unknown `direction`, or an `"equivalent"` without
            a positive `margin`.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"verdict expects direction in {DIRECTIONS}. Received: {direction!r}")
    if direction == EQUIVALENT:
        if margin is None or not margin > 0:
            raise ValueError(
                f"verdict expects a positive margin for an equivalence. Received: {margin!r}"
            )
        if -margin <= low and high <= margin:
            return SUPPORTED
        if low > margin or high < -margin:
            return CONTRADICTED
        return INCONCLUSIVE
    sign = -1.0 if direction == LOWER else 1.0
    if sign * low > 0 and sign * high > 0:
        return SUPPORTED
    if sign * low < 0 and sign * high < 0:
        return CONTRADICTED
    return INCONCLUSIVE
