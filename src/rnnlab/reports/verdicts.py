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
- Beside the t-test, a test that does not assume normal scores: Wilcoxon's signed-rank
  test where the seeds pair, the rank-sum (Mann-Whitney) test where they do not, both exact
  at these sizes (scipy), Holm-corrected the same way. The t-test decides the bold; the
  rank test is shown beside it, and a disagreement is plain to see. With n paired seeds
  the signed-rank test cannot go below 2/2^n (0.0625 at 5): at fewer than 6 seeds it can
  never confirm a win, and the report says so rather than calling that a tie.
- Effect size: Cohen's d (the difference of means over the pooled std), and the
  probability of improvement P(A > B), the chance that a run of A beats a run of B, ties
  counting half (rliable's definition, Agarwal et al. 2021), with a bootstrap interval.
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


def rank_test(first: Scores, second: Scores) -> Comparison:
    """Two-sided, without assuming normal scores: signed-rank where the seeds pair, else
    rank-sum. Exact distributions: a grid's handful of seeds is far below where the normal
    approximation holds."""
    if min(len(first), len(second)) < 2:
        return Comparison(None, "none")
    if set(first) == set(second):
        differences = [first[seed] - second[seed] for seed in sorted(first)]
        if not any(differences):
            return Comparison(1.0, "signed-rank")
        result = stats.wilcoxon(differences, zero_method="zsplit", method="exact")
        return Comparison(float(result.pvalue), "signed-rank")
    result = stats.mannwhitneyu(list(first.values()), list(second.values()), method="exact")
    return Comparison(float(result.pvalue), "rank-sum")


def smallest_rank_p(n: int) -> float:
    """The smallest two-sided p the exact signed-rank test can give for n paired seeds."""
    return min(1.0, 2 / 2**n)


def cohens_d(first: Scores, second: Scores) -> float | None:
    """(mean of first - mean of second) / pooled std; None below 2 scores or with no spread."""
    a, b = list(first.values()), list(second.values())
    if min(len(a), len(b)) < 2:
        return None
    pooled = math.sqrt(
        ((len(a) - 1) * statistics.variance(a) + (len(b) - 1) * statistics.variance(b))
        / (len(a) + len(b) - 2)
    )
    return None if pooled == 0 else (statistics.mean(a) - statistics.mean(b)) / pooled


def probability_of_improvement(first: list[float], second: list[float], direction: str) -> float:
    """P(a run of first beats a run of second), ties half: the Mann-Whitney U over n·m."""
    a = np.asarray(first, dtype=float)[:, None]
    b = np.asarray(second, dtype=float)[None, :]
    wins = (a > b) if direction == "maximize" else (a < b)
    return float(np.mean(wins + 0.5 * (a == b)))


def improvement_interval(
    first: list[float],
    second: list[float],
    direction: str,
    repetitions: int = 2000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """P(A > B) and its percentile bootstrap interval, resampling each side's runs."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    draws = [
        probability_of_improvement(
            rng.choice(a, len(a)).tolist(), rng.choice(b, len(b)).tolist(), direction
        )
        for _ in range(repetitions)
    ]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return probability_of_improvement(first, second, direction), float(low), float(high)


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
    direction: str = "maximize"
    rank_p_against: dict[str, float] = field(default_factory=dict)  # Holm-adjusted, vs best
    rank_p: float | None = None  # the largest Holm-adjusted rank-test p of best
    rank_tests: set[str] = field(default_factory=set)
    rank_floor: float | None = None  # the smallest p the rank test could reach here

    def rank_text(self) -> str:
        """The rank test's say on the same comparisons, beside the t-test's verdict."""
        if self.rank_p is None:
            return ""
        tests = "/".join(sorted(self.rank_tests))
        text = f"{tests}: p = {self.rank_p:.2g}"
        if self.rank_floor is not None and self.rank_floor >= ALPHA:
            text += f" (cannot go below {self.rank_floor:.2g} with these seeds)"
        return text

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
    ranked = [rank_test(scored[best], scores) for scores in contenders.values()]
    rank_adjusted = multipletests([c.p for c in ranked], method="holm")[1]
    paired = [len(scores) for scores in contenders.values() if set(scores) == set(scored[best])]
    return Verdict(
        best,
        winner,
        p,
        tests,
        below,
        few_seeds,
        against,
        direction=direction,
        rank_p_against=dict(zip(contenders, map(float, rank_adjusted), strict=True)),
        rank_p=float(np.max(rank_adjusted)),
        rank_tests={c.test for c in ranked},
        rank_floor=smallest_rank_p(min(paired)) if len(paired) == len(ranked) else None,
    )
