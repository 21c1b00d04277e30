"""Which cell is better across tasks: ranks, Friedman's test, a critical-difference
diagram, and the interquartile mean of baseline-normalised scores.

A per-task test answers "does GRU beat LSTM on adding?"; a reviewer also asks "which cell
is better overall?". Tasks differ in metric and scale, so nothing is averaged raw:

- Ranks (Demšar 2006): each task ranks the cells by mean test score (1 is best, ties share
  the average rank); Friedman's test asks whether the mean ranks differ more than chance.
  Pairs are then compared with Wilcoxon's signed-rank test over tasks on normalised scores,
  Holm-corrected, as the UCR community draws its critical-difference diagrams (Benavoli et
  al. 2016 argue against the Nemenyi test, which depends on the other cells compared).
- Normalised scores: 0 is the task's trivial baseline, 1 the ideal score (0 error, 100%
  accuracy, BLEU 100), so "how far from trivial to perfect" is comparable between tasks.
  A task with no baseline, or whose metric has no known ideal, is ranked but not pooled.
- Aggregate: the interquartile mean (IQM) of a cell's normalised scores over every task and
  seed, with a stratified bootstrap interval (seeds resampled within each task): robust to
  one outlying run, and more efficient than the median (Agarwal et al. 2021, rliable).

scipy and statsmodels (already dependencies) give every test; autorank would add a
dependency for the same few calls and draws its diagrams with Nemenyi's test.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from rnnlab.reports.verdicts import ALPHA, CONFIDENCE, Scores, smallest_rank_p

# The best score a metric can take, where one exists: where 1 on the normalised scale is.
IDEAL_MAXIMUM = {"accuracy": 1.0, "bleu": 100.0}
IDEAL_OF_MINIMIZED = 0.0  # errors and losses: nothing is better than none


@dataclass(frozen=True)
class TaskScores:
    """One task's scores for the comparison: each cell's by seed, and how to read them."""

    cells: dict[str, Scores]
    direction: str  # maximize or minimize
    metric: str
    baseline: float | None = None  # the trivial baseline's mean test score


def ideal(metric: str, direction: str) -> float | None:
    if direction == "minimize":
        return IDEAL_OF_MINIMIZED
    return IDEAL_MAXIMUM.get(metric)


def normalised(score: float, task: TaskScores) -> float | None:
    """0 at the baseline, 1 at the ideal; None where either is unknown or they coincide."""
    best = ideal(task.metric, task.direction)
    if task.baseline is None or best is None or best == task.baseline:
        return None
    return (score - task.baseline) / (best - task.baseline)


def task_ranks(task: TaskScores, cells: list[str]) -> np.ndarray:
    """Each cell's rank on one task by mean score, 1 best, ties sharing the average."""
    means = np.array([statistics.mean(task.cells[cell].values()) for cell in cells])
    return stats.rankdata(-means if task.direction == "maximize" else means)


@dataclass
class Standing:
    """The cells' comparison over tasks."""

    cells: list[str]  # best mean rank first
    tasks: list[str]  # the tasks every cell ran
    mean_ranks: dict[str, float]
    friedman_p: float | None  # None with fewer than 3 cells or 2 tasks
    pairwise_p: dict[tuple[str, str], float]  # Holm-adjusted signed-rank over tasks
    cliques: list[list[str]]  # runs of cells no test separates: the diagram's bars
    iqm: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # IQM, low, high
    pooled_tasks: list[str] = field(default_factory=list)  # the tasks in the IQM
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """The table and the test's outcome, for the report."""
        lines = [
            "| cell | mean rank | IQM of normalised score [95% interval] |",
            "|---|---|---|",
        ]
        for cell in self.cells:
            if cell in self.iqm:
                middle, low, high = self.iqm[cell]
                pooled = f"{middle:.3f} [{low:.3f}, {high:.3f}]"
            else:
                pooled = "—"
            lines.append(f"| {cell} | {self.mean_ranks[cell]:.2f} | {pooled} |")
        if self.friedman_p is None:
            test = "Friedman's test needs at least 3 cells and 2 tasks."
        else:
            test = f"Friedman's test over {len(self.tasks)} tasks: p = {self.friedman_p:.2g}."
        separated = [
            f"{a} vs {b} (p = {p:.2g})" for (a, b), p in self.pairwise_p.items() if p < ALPHA
        ]
        if separated:
            test += f" Separated by the Holm-corrected signed-rank test: {', '.join(separated)}."
        else:
            test += " No pair of cells is separated by the Holm-corrected signed-rank test"
            floor = pairwise_floor(len(self.tasks), len(self.pairwise_p))
            if floor >= ALPHA:
                test += (
                    f": over {len(self.tasks)} tasks and {len(self.pairwise_p)} pairs it "
                    f"cannot go below p = {floor:.2g}, so only more tasks could separate a pair"
                )
            test += "."
        caption = (
            "Across tasks: rank 1 is the best mean test score on a task; the IQM pools every "
            "task and seed on a scale where 0 is the task's trivial baseline and 1 the ideal "
            f"score (tasks pooled: {', '.join(self.pooled_tasks) or 'none'}), with a "
            f"{CONFIDENCE:.0%} stratified bootstrap interval."
        )
        return "\n".join([*lines, "", test, "", caption, *self.notes]) + "\n"


def standing(
    tasks: dict[str, TaskScores], repetitions: int = 2000, seed: int = 0
) -> Standing | None:
    """Rank, test and pool the cells every task ran; None when fewer than 2 cells did."""
    ran = [{cell for cell, scores in task.cells.items() if scores} for task in tasks.values()]
    common = sorted(set.intersection(*ran)) if ran else []
    if len(common) < 2:
        return None
    notes = []
    if any(ran_here != set(common) for ran_here in ran):
        notes.append(f"Only the cells every task ran are compared: {', '.join(common)}.")
    names = list(tasks)
    ranks = np.array([task_ranks(tasks[name], common) for name in names])
    mean_ranks = dict(zip(common, ranks.mean(axis=0).tolist(), strict=True))
    friedman_p = None
    if len(common) >= 3 and len(names) >= 2:
        friedman_p = float(stats.friedmanchisquare(*ranks.T).pvalue)
    pairwise = pairwise_over_tasks(tasks, common)
    order = sorted(common, key=mean_ranks.__getitem__)
    pooled = [
        name
        for name, task in tasks.items()
        if normalised(statistics.mean(task.cells[common[0]].values()), task) is not None
    ]
    result = Standing(
        order,
        names,
        mean_ranks,
        friedman_p,
        pairwise,
        cliques(order, pairwise),
        pooled_tasks=pooled,
        notes=notes,
    )
    if pooled:
        rng = np.random.default_rng(seed)
        for cell in common:
            result.iqm[cell] = iqm_interval(
                [tasks[name] for name in pooled], cell, rng, repetitions
            )
    return result


def pairwise_over_tasks(
    tasks: dict[str, TaskScores], cells: list[str]
) -> dict[tuple[str, str], float]:
    """Holm-adjusted two-sided signed-rank p of each pair, over the tasks' mean scores
    turned so that higher is better and scaled to the baseline-to-ideal range where known
    (the test ranks differences between tasks, so their scales must agree)."""
    from statsmodels.stats.multitest import multipletests

    def oriented(task: TaskScores, cell: str) -> float:
        mean = statistics.mean(task.cells[cell].values())
        scaled = normalised(mean, task)
        if scaled is not None:
            return scaled
        return mean if task.direction == "maximize" else -mean

    pairs = list(itertools.combinations(cells, 2))
    raw = []
    for first, second in pairs:
        differences = [oriented(t, first) - oriented(t, second) for t in tasks.values()]
        if not any(differences):
            raw.append(1.0)
            continue
        raw.append(float(stats.wilcoxon(differences, zero_method="zsplit").pvalue))
    adjusted = multipletests(raw, method="holm")[1]
    return dict(zip(pairs, map(float, adjusted), strict=True))


def pairwise_floor(tasks: int, pairs: int) -> float:
    """The smallest Holm-adjusted p the pairwise test can give: the exact signed-rank
    test's smallest p over `tasks` differences, times the number of pairs (Holm's first
    step). Above alpha, the diagram's bars are certain before any run: 7 tasks and 4
    cells (6 pairs) give 0.094."""
    return min(1.0, pairs * smallest_rank_p(tasks))


def cliques(order: list[str], pairwise: dict[tuple[str, str], float]) -> list[list[str]]:
    """The longest runs of cells (in rank order) that no pair inside separates: each is a
    bar of the critical-difference diagram. A run inside a longer one is left out."""

    def together(a: str, b: str) -> bool:
        return pairwise.get((a, b), pairwise.get((b, a), 1.0)) >= ALPHA

    runs = []
    for start in range(len(order)):
        end = start + 1
        while end < len(order) and all(together(order[i], order[end]) for i in range(start, end)):
            end += 1
        if end - start > 1:
            runs.append(order[start:end])
    return [run for run in runs if not any(set(run) < set(other) for other in runs)]


def interquartile_mean(values: np.ndarray) -> float:
    """The mean of the middle half (scipy's trim_mean at 25%, as rliable computes it)."""
    return float(stats.trim_mean(values, 0.25))


def iqm_interval(
    tasks: list[TaskScores], cell: str, rng: np.random.Generator, repetitions: int
) -> tuple[float, float, float]:
    """IQM of the cell's normalised scores over tasks and seeds, and a percentile interval
    from resampling the seeds within each task (rliable's stratified bootstrap)."""
    per_task = [
        np.array([normalised(score, task) for score in task.cells[cell].values()], dtype=float)
        for task in tasks
    ]
    point = interquartile_mean(np.concatenate(per_task))
    draws = [
        interquartile_mean(np.concatenate([rng.choice(runs, len(runs)) for runs in per_task]))
        for _ in range(repetitions)
    ]
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return point, float(low), float(high)
