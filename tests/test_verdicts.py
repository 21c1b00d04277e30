"""The report's statistics on cases whose answer is known without rnnlab."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rnnlab.reports.verdicts import compare, judge, summarize


def by_seed(*values: float) -> dict[int, float]:
    return dict(enumerate(values))


def test_the_interval_is_scipys_t_interval():
    sample = [0.761, 0.754, 0.769, 0.748, 0.772]
    summary = summarize(sample)
    sem = np.std(sample, ddof=1) / np.sqrt(len(sample))
    low, high = stats.t.interval(0.95, df=len(sample) - 1, loc=np.mean(sample), scale=sem)
    assert (summary.low, summary.high) == pytest.approx((low, high), rel=1e-12)
    assert summary.n == 5 and summary.std == pytest.approx(np.std(sample, ddof=1))


def test_one_score_has_no_interval_and_identical_scores_a_point():
    assert (summarize([0.5]).low, summarize([0.5]).high) == (None, None)
    assert (summarize([0.5, 0.5]).low, summarize([0.5, 0.5]).high) == (0.5, 0.5)


def test_identical_samples_are_no_evidence_of_a_difference():
    scores = by_seed(0.70, 0.72, 0.71)
    verdict = judge({"lstm": scores, "gru": dict(scores)}, "maximize")
    assert verdict.winner is None and "tie" in verdict.text()
    assert compare(scores, dict(scores)).p == 1.0


def test_clearly_separated_samples_make_a_significant_winner():
    cells = {
        "gru": by_seed(0.90, 0.91, 0.92, 0.90, 0.91),
        "lstm": by_seed(0.70, 0.72, 0.71, 0.69, 0.70),
        "simple_rnn": by_seed(0.50, 0.52, 0.49, 0.51, 0.50),
    }
    verdict = judge(cells, "maximize")
    assert verdict.winner == "gru" and verdict.p < 0.001
    assert verdict.text().startswith("gru best (p = ") and "n <" not in verdict.text()


def test_overlapping_samples_are_no_significant_difference():
    # The sentiment default: LSTM 0.761 ± 0.007, GRU 0.767 ± 0.015 over 3 seeds.
    cells = {"lstm": by_seed(0.754, 0.761, 0.768), "gru": by_seed(0.752, 0.767, 0.782)}
    verdict = judge(cells, "maximize")
    assert verdict.best == "gru" and verdict.winner is None
    assert verdict.text() == f"no significant difference (p = {verdict.p:.2g}); n < 5"


def test_seeds_pair_the_runs_where_both_cells_ran_them():
    # Seeds move both cells alike: only the pairing sees that gru is always 0.01 ahead.
    lstm = by_seed(0.60, 0.70, 0.80, 0.65)
    gru = {seed: value + 0.01 + 0.001 * seed for seed, value in lstm.items()}
    paired = compare(gru, lstm)
    assert paired.test == "paired t" and paired.p < 0.001
    shifted = {seed + 10: value for seed, value in lstm.items()}
    welch = compare(gru, shifted)
    assert welch.test == "Welch t" and welch.p > 0.5
    expected = stats.ttest_ind(list(gru.values()), list(lstm.values()), equal_var=False).pvalue
    assert welch.p == pytest.approx(expected)


def test_holm_corrects_the_comparisons_with_the_best():
    rng = np.random.default_rng(0)
    cells = {
        name: by_seed(*(mean + rng.normal(0, 0.02, 4)))
        for name, mean in {"a": 0.80, "b": 0.77, "c": 0.76, "d": 0.70}.items()
    }
    verdict = judge(cells, "maximize")
    raw = sorted(
        stats.ttest_rel(list(cells["a"].values()), list(v.values())).pvalue
        for name, v in cells.items()
        if name != "a"
    )
    # Holm by hand: the i-th smallest p times (m - i), made monotone, capped at 1.
    holm = np.minimum(1, np.maximum.accumulate([p * (3 - i) for i, p in enumerate(raw)]))
    assert verdict.best == "a" and verdict.p == pytest.approx(holm.max())
    assert sorted(verdict.p_against.values()) == pytest.approx(sorted(holm))
    assert verdict.p > max(raw) * 0.999


def test_a_cell_no_better_than_the_baseline_is_never_the_winner():
    # The smoke table: the adding problem, where predicting 1 scores 0.1612.
    cells = {"lstm": by_seed(1.3994 - 0.54, 1.3994 + 0.54), "simple_rnn": by_seed(1.89, 2.75)}
    verdict = judge(cells, "minimize", baseline=by_seed(0.16, 0.1624))
    assert verdict.winner is None
    assert verdict.below_baseline == {"lstm", "simple_rnn"}
    assert verdict.text() == f"no cell beats the baseline (p = {verdict.p:.2g}); n < 5"
    assert set(verdict.p_against) == {"simple_rnn", "baseline"}


def test_the_winner_must_also_beat_the_baseline_significantly():
    cells = {"gru": by_seed(0.10, 0.11, 0.12), "lstm": by_seed(0.50, 0.52, 0.51)}
    near_baseline = judge(cells, "minimize", baseline=by_seed(0.12, 0.10, 0.125))
    assert near_baseline.below_baseline == {"lstm"}
    assert near_baseline.winner is None and near_baseline.p > 0.05
    far_baseline = judge(cells, "minimize", baseline=by_seed(0.9, 0.95, 0.92))
    assert far_baseline.winner == "gru"


def test_a_single_run_cannot_be_tested():
    verdict = judge({"gru": by_seed(0.9), "lstm": by_seed(0.5, 0.6)}, "maximize")
    assert verdict.best == "gru" and verdict.winner is None
    assert verdict.text() == "too few runs to test; n < 5"
    assert judge({}, "maximize").text() == "no runs"
