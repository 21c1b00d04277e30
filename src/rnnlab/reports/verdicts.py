"""Which cell wins a task, and whether the seeds say so: intervals, tests, corrections.

A table entry is a handful of seeds. Its mean alone cannot crown a winner: the best mean
is bold only when a test says it beats every other cell and the task's trivial baseline.

- Interval: Student's t over seeds (scipy), the usual choice for a few roughly normal
  scores; a bootstrap needs more samples than the 2–5 seeds a grid affords.
- Test: the best mean against each contender, two-sided. Runs with the same seed share
  their data split and order, so where two cells ran the same seeds the test is paired
  (scipy's `ttest_rel`); otherwise Welch's t-test (`ttest_ind`, unequal variances).
- Correction: Holm's step-down over the contenders (statsmodels), which keeps the chance
  of any false win at alpha without Bonferroni's loss of power.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 0.95
FEW_SEEDS = 5  # below this a note warns that intervals are wide and tests weak

Scores = dict[int, float]  # seed -> test score


@dataclass(frozen=True)
class Summary:
    """Mean, spread and the 95% t-interval of one entry's scores (no interval below n=2)."""

    n: int
    mean: float
    std: float
    low: float | None
    high: float | None


def summarize(values: list[float], confidence: float = CONFIDENCE) -> Summary:
    if not values:
        raise ValueError("no scores to summarize")
    mean = statistics.mean(values)
    if len(values) < 2:
        return Summary(1, mean, 0.0, None, None)
    std = statistics.stdev(values)
    if std == 0:  # scipy's interval is NaN for identical scores; it is the point itself
        return Summary(len(values), mean, 0.0, mean, mean)
    interval = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    return Summary(len(values), mean, std, float(interval.low), float(interval.high))


@dataclass(frozen=True)
class Comparison:
    p: float | None  # None: too few runs to test
    test: str  # "paired t", "Welch t" or "none"


def compare(first: Scores, second: Scores) -> Comparison:
    """Two-sided: do these two sets of scores differ? Paired where they share every seed."""
    if min(len(first), len(second)) < 2:
        return Comparison(None, "none")
    with warnings.catch_warnings():
        # Nearly identical samples make scipy warn about precision; the p-value stands.
        warnings.simplefilter("ignore", RuntimeWarning)
        if set(first) == set(second):
            seeds = sorted(first)
            result = stats.ttest_rel([first[s] for s in seeds], [second[s] for s in seeds])
            test = "paired t"
        else:
            result = stats.ttest_ind(list(first.values()), list(second.values()), equal_var=False)
            test = "Welch t"
    p = float(result.pvalue)
    # Identical samples give 0/0: no evidence of any difference.
    return Comparison(1.0 if math.isnan(p) else p, test)


@dataclass
class Verdict:
    """One task's outcome: the best mean, and whether it is a significant win."""

    best: str | None  # the column with the best mean; None when nothing ran or means tie
    winner: str | None  # `best`, when it beats every contender at alpha (Holm)
    p: float | None  # the largest Holm-adjusted p of best against a contender
    tests: set[str] = field(default_factory=set)
    below_baseline: set[str] = field(default_factory=set)  # columns not better than it
    few_seeds: bool = False  # some entry has fewer than FEW_SEEDS scores
    p_against: dict[str, float] = field(default_factory=dict)  # Holm-adjusted p vs `best`

    def text(self) -> str:
        note = f"; n < {FEW_SEEDS}" if self.few_seeds else ""
        if self.best is None:
            return "no runs" if self.p is None else f"tie{note}"
        if self.best in self.below_baseline:
            against = f" (p = {self.p:.2g})" if self.p is not None else ""
            return f"no cell beats the baseline{against}{note}"
        if self.p is None:
            return f"too few runs to test{note}"
        if self.winner:
            return f"{self.winner} best (p = {self.p:.2g}){note}"
        return f"no significant difference (p = {self.p:.2g}){note}"


def better_than(direction: str):
    return (lambda a, b: a > b) if direction == "maximize" else (lambda a, b: a < b)


def judge(
    cells: dict[str, Scores],
    direction: str,
    baseline: Scores | None = None,
    alpha: float = ALPHA,
) -> Verdict:
    """The verdict for one task: `cells` maps each cell to its scores by seed."""
    scored = {name: scores for name, scores in cells.items() if scores}
    few_seeds = any(len(scores) < FEW_SEEDS for scores in scored.values())
    if not scored:
        return Verdict(None, None, None, few_seeds=few_seeds)
    means = {name: statistics.mean(scores.values()) for name, scores in scored.items()}
    better = better_than(direction)
    below = set()
    if baseline:
        base = statistics.mean(baseline.values())
        below = {name for name, mean in means.items() if not better(mean, base)}
    pick = max if direction == "maximize" else min
    best = pick(means, key=means.__getitem__)
    if len(scored) > 1 and all(mean == means[best] for mean in means.values()):
        return Verdict(None, None, 1.0, below_baseline=below, few_seeds=few_seeds)
    contenders = {name: scores for name, scores in scored.items() if name != best}
    if baseline:
        contenders["baseline"] = baseline
    comparisons = [compare(scored[best], scores) for scores in contenders.values()]
    if not comparisons or any(c.p is None for c in comparisons):
        return Verdict(best, None, None, below_baseline=below, few_seeds=few_seeds)
    from statsmodels.stats.multitest import multipletests  # 1-2 s to import: only when used

    _, adjusted, _, _ = multipletests([c.p for c in comparisons], method="holm")
    p = float(np.max(adjusted))
    winner = best if p < alpha and best not in below else None
    tests = {c.test for c in comparisons}
    against = dict(zip(contenders, map(float, adjusted), strict=True))
    return Verdict(best, winner, p, tests, below, few_seeds, against)
