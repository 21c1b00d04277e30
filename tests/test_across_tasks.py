"""The statistics beyond one task's t-test, on inputs whose answers are known by hand:
rank tests, effect sizes, Friedman's test, the critical-difference groups and the IQM."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rnnlab.records.plots import critical_difference_figure
from rnnlab.reports.across_tasks import (
    TaskScores,
    cliques,
    interquartile_mean,
    normalised,
    standing,
)
from rnnlab.reports.verdicts import (
    cohens_d,
    improvement_interval,
    judge,
    probability_of_improvement,
    rank_test,
)


def by_seed(*values: float) -> dict[int, float]:
    return dict(enumerate(values))


def test_the_signed_rank_test_is_exact_and_cannot_confirm_a_win_below_six_seeds():
    # Every one of n paired differences favours the same side: the exact two-sided p is
    # 2 / 2^n, the most extreme of the 2^n equally likely sign patterns, counted twice.
    five = rank_test(by_seed(1, 2, 3, 4, 5), by_seed(0, 0.5, 1, 1.5, 2))
    six = rank_test(by_seed(1, 2, 3, 4, 5, 6), by_seed(0, 0.5, 1, 1.5, 2, 2.5))
    assert (five.test, five.p) == ("signed-rank", pytest.approx(2 / 32))
    assert six.p == pytest.approx(2 / 64)


def test_unpaired_seeds_get_the_exact_rank_sum_test():
    # 3 against 3, fully separated: 2 of the C(6, 3) = 20 splits are this extreme.
    result = rank_test({1: 5.0, 2: 6.0, 3: 7.0}, {4: 1.0, 5: 2.0, 6: 3.0})
    assert (result.test, result.p) == ("rank-sum", pytest.approx(2 / 20))


def test_the_verdict_says_when_its_rank_test_could_not_reach_alpha():
    cells = {
        "gru": by_seed(0.90, 0.91, 0.92, 0.90, 0.91),
        "lstm": by_seed(0.70, 0.72, 0.71, 0.69, 0.70),
    }
    verdict = judge(cells, "maximize")
    assert verdict.winner == "gru"  # the t-test decides
    assert verdict.rank_p == pytest.approx(2 / 32)
    assert "signed-rank: p = 0.062 (cannot go below 0.062" in verdict.rank_text()


def test_probability_of_improvement_counts_wins_and_half_ties():
    # [1, 2, 3] against [2, 2, 2]: 3 losses, 3 ties, 3 wins of 9 pairs.
    assert probability_of_improvement([1, 2, 3], [2, 2, 2], "maximize") == pytest.approx(0.5)
    assert probability_of_improvement([1, 1], [2, 3], "minimize") == 1.0
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 7), rng.normal(0.5, 1, 6)
    u = stats.mannwhitneyu(a, b).statistic  # the number of pairs a wins, ties half
    assert probability_of_improvement(a.tolist(), b.tolist(), "maximize") == pytest.approx(
        u / (7 * 6)
    )


def test_the_improvement_interval_holds_the_point_and_narrows_with_separation():
    apart = improvement_interval([5, 6, 7, 8], [1, 2, 3, 4], "maximize", repetitions=500)
    mixed = improvement_interval([1, 3, 5, 7], [2, 4, 6, 8], "maximize", repetitions=500)
    assert apart == (1.0, 1.0, 1.0)
    assert mixed[1] < mixed[0] < mixed[2]


def test_cohens_d_is_the_mean_difference_over_the_pooled_std():
    assert cohens_d(by_seed(1, 2, 3), by_seed(2, 3, 4)) == pytest.approx(-1.0)
    assert cohens_d(by_seed(1, 1), by_seed(1, 1)) is None


def test_normalised_scores_run_from_the_baseline_to_the_ideal():
    adding = TaskScores({}, "minimize", "mse", baseline=0.167)
    sentiment = TaskScores({}, "maximize", "accuracy", baseline=0.5)
    assert normalised(0.0167, adding) == pytest.approx(0.9)
    assert normalised(0.75, sentiment) == pytest.approx(0.5)
    assert normalised(0.3, TaskScores({}, "maximize", "auc", baseline=0.1)) is None  # no ideal
    assert normalised(0.3, TaskScores({}, "minimize", "mse")) is None  # no baseline


def test_the_interquartile_mean_is_the_mean_of_the_middle_half():
    assert interquartile_mean(np.arange(8.0)) == pytest.approx(3.5)  # (2 + 3 + 4 + 5) / 4
    assert interquartile_mean(np.array([0, 1, 1, 1, 1, 1, 1, 100.0])) == pytest.approx(1.0)


def consistent_tasks(count: int) -> dict[str, TaskScores]:
    """`count` accuracy tasks on which a beats b beats c by a margin that varies."""
    tasks = {}
    for index in range(count):
        step = 0.05 + 0.01 * index
        tasks[f"task{index}"] = TaskScores(
            {
                "a": by_seed(0.9, 0.91, 0.89),
                "b": by_seed(0.9 - step, 0.91 - step, 0.89 - step),
                "c": by_seed(0.9 - 2 * step, 0.91 - 2 * step, 0.89 - 2 * step),
            },
            "maximize",
            "accuracy",
            baseline=0.5,
        )
    return tasks


def test_friedman_on_a_consistent_ordering_matches_the_hand_computation():
    # N tasks, k = 3 cells ranked 1, 2, 3 on each: chi² = 12/(N k (k+1)) Σ R_j² - 3 N (k+1)
    # with rank sums R = (N, 2N, 3N), which is 2N; 2 degrees of freedom: p = exp(-chi²/2).
    for count in (4, 6):
        result = standing(consistent_tasks(count), repetitions=200)
        assert result.mean_ranks == {"a": 1.0, "b": 2.0, "c": 3.0}
        assert result.friedman_p == pytest.approx(math.exp(-count))


def test_six_tasks_cannot_separate_a_pair_after_holm_but_eight_can():
    # All six differences of a pair favour one side: exact p = 2/2^6, times 3 pairs (Holm).
    six = standing(consistent_tasks(6), repetitions=200)
    assert six.pairwise_p[("a", "b")] == pytest.approx(3 * 2 / 64)
    assert six.cliques == [["a", "b", "c"]]
    assert "over 6 tasks and 3 pairs it cannot go below p = 0.094" in six.markdown()
    eight = standing(consistent_tasks(8), repetitions=200)
    assert max(eight.pairwise_p.values()) < 0.05 and eight.cliques == []
    assert "a vs b" in eight.markdown() and "cannot go below" not in eight.markdown()


def test_a_pair_left_together_where_it_could_have_been_separated_says_no_floor():
    # Eight tasks could separate a pair; a and b trade wins, so they stay together.
    tasks = consistent_tasks(8)
    for index, name in enumerate(tasks):
        if index % 2:
            cells = tasks[name].cells
            tasks[name] = TaskScores(
                {"a": cells["b"], "b": cells["a"], "c": cells["c"]}, "maximize", "accuracy", 0.5
            )
    text = standing(tasks, repetitions=200).markdown()
    assert "a vs c" in text and "a vs b" not in text and "cannot go below" not in text


def test_cliques_are_the_longest_runs_no_pair_inside_separates():
    order = ["a", "b", "c", "d"]
    apart = {("a", "c"): 0.01, ("a", "d"): 0.01, ("b", "d"): 0.01}
    pairwise = {pair: apart.get(pair, 0.5) for pair in [("a", "b"), ("b", "c"), ("c", "d")]}
    pairwise |= apart
    assert cliques(order, pairwise) == [["a", "b"], ["b", "c"], ["c", "d"]]
    pairwise[("b", "d")] = 0.5
    assert cliques(order, pairwise) == [["a", "b"], ["b", "c", "d"]]


def test_the_iqm_pools_only_tasks_with_a_baseline_and_an_ideal():
    tasks = consistent_tasks(3)
    tasks["forecast"] = TaskScores(
        {"a": by_seed(1.0, 1.1, 0.9), "b": by_seed(2.0, 2.1, 1.9), "c": by_seed(3.0, 3, 3)},
        "minimize",
        "mae",
    )
    result = standing(tasks, repetitions=300)
    assert result.pooled_tasks == ["task0", "task1", "task2"]
    middle, low, high = result.iqm["a"]
    assert middle == pytest.approx((0.9 - 0.5) / 0.5)  # 0.89, 0.9, 0.91: the middle is 0.9
    assert low <= middle <= high
    assert result.iqm["a"][0] > result.iqm["b"][0] > result.iqm["c"][0]


def test_a_cell_missing_from_a_task_is_left_out_with_a_note():
    tasks = consistent_tasks(3)
    tasks["task0"].cells.pop("c")
    result = standing(tasks, repetitions=100)
    assert result.cells == ["a", "b"] and "Only the cells every task ran" in result.notes[0]


def test_the_diagram_labels_every_cell_with_its_rank_and_draws_each_group():
    figure = critical_difference_figure(
        {"gru": 1.5, "lstm": 1.8, "simple_rnn": 2.7}, [["gru", "lstm"]], "across tasks"
    )
    labels = {text.get_text() for text in figure.axes[0].texts}
    assert {"gru (1.50)", "lstm (1.80)", "simple_rnn (2.70)"} <= labels
    bars = [c for c in figure.axes[0].collections if max(c.get_linewidths()) == 3]
    assert len(bars) == 1
