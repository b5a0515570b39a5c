"""A paper's claims as data, and the verdicts the runs give them.

A `Claim` names the paper's statement, the outcome it is about
(`keras_norms.training.outcomes`), the pairs of configurations it compares
and the direction: the first's outcome `"lower"` or `"higher"` than the
second's, or `"equivalent"` within a margin in the outcome's unit. Each pair
is compared paired by seed (`statistics.paired_comparison`), its p-value
Holm-adjusted over the claim's pairs, and its verdict read off the effect's
interval (`statistics.verdict`). The claim is supported when every pair is,
contradicted when any pair is, inconclusive otherwise. A pair compared over
fewer than `MIN_SEEDS` seeds is inconclusive whatever its interval: a bootstrap
of a handful of values gives an interval narrower than the truth. A directional
pair whose Holm-adjusted p-value is not below `ALPHA` is inconclusive too: the
interval is one pair's, the p-value accounts for the claim's other pairs.
"""

import dataclasses
import math

from keras_norms.training import outcomes, statistics

MIN_SEEDS = 5
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Claim:
    """One statement of a paper, testable on the runs.

    Attributes:
        statement: the paper's words (or their gist), e.g. "weight
            normalization trains faster than the plain parameterization".
        outcome: the outcome compared, a name `outcomes.outcome` knows.
        pairs: `((first, second), ...)` configuration names.
        direction: `"lower"`, `"higher"` or `"equivalent"`.
        margin: for `"equivalent"`, the largest difference that still
            counts as equal, in the outcome's unit.
        source: where the paper says it (section, figure, equation).
        second_outcome: the outcome of the second of each pair, where it is
            another one of the same runs (e.g. `test_error` against
            `test_error_running_averages` of one configuration); defaults
            to `outcome`.
    """

    statement: str
    outcome: str
    pairs: tuple
    direction: str
    margin: float = None
    source: str = ""
    second_outcome: str = None

    def __post_init__(self):
        outcomes.check_name(self.outcome)
        outcomes.check_name(self.second_outcome or self.outcome)
        statistics.verdict(0.0, 0.0, self.direction, self.margin)  # checks both
        if not self.pairs or any(len(pair) != 2 for pair in self.pairs):
            raise ValueError(f"Claim expects pairs of two names. Received: {self.pairs!r}")

    def configurations(self):
        """The configuration names the claim compares, in order of first mention."""
        return tuple(dict.fromkeys(name for pair in self.pairs for name in pair))


@dataclasses.dataclass(frozen=True)
class PairVerdict:
    """One pair's comparison (first minus second) and the verdict it gives."""

    first: str
    second: str
    comparison: statistics.Comparison
    p_holm: float
    verdict: str


def _pair_verdict(claim, comparison, p_holm):
    directional = claim.direction != statistics.EQUIVALENT
    if comparison.n < MIN_SEEDS or (directional and not p_holm < ALPHA):
        return statistics.INCONCLUSIVE
    return statistics.verdict(comparison.low, comparison.high, claim.direction, claim.margin)


def _aggregate(verdicts):
    if all(v == statistics.SUPPORTED for v in verdicts):
        return statistics.SUPPORTED
    if any(v == statistics.CONTRADICTED for v in verdicts):
        return statistics.CONTRADICTED
    return statistics.INCONCLUSIVE


def evaluate(claim, values, second_values=None):
    """The claim's verdict on `values`: `{configuration: [outcome per seed]}`, seeds aligned
    (`second_values`: the same of `claim.second_outcome`, for each pair's second).

    Pairs with a non-finite value in either configuration (an outcome a
    configuration does not have) are dropped from the claim's family.

    Returns:
        `(verdict, [PairVerdict, ...])`.

    Raises:
        ValueError: if a pair has fewer than 2 seeds or unequal seed counts.
    """
    second_values = values if second_values is None else second_values
    results = []
    for first, second in claim.pairs:
        a, b = values[first], second_values[second]
        if not all(math.isfinite(v) for v in list(a) + list(b)):
            continue
        results.append((first, second, statistics.paired_comparison(a, b)))
    adjusted = statistics.holm([c.p_value for _, _, c in results])
    pair_verdicts = [
        PairVerdict(first, second, comparison, p_holm, _pair_verdict(claim, comparison, p_holm))
        for (first, second, comparison), p_holm in zip(results, adjusted)
    ]
    if not pair_verdicts:
        return statistics.INCONCLUSIVE, []
    return _aggregate([p.verdict for p in pair_verdicts]), pair_verdicts
