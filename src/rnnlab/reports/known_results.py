"""Published claims an experiment sets out to reproduce, and whether its runs do.

A framework that compares cells earns trust by first showing what the field knows. An
experiment's `claims:` list states each published result beside the grid points that test
it, and the report judges every one from the seeds, never from a single run:

- `solves`: the cell's test score clears a bar: `factor` × the task's trivial baseline (an
  error at most a tenth of the baseline's, say), or a `threshold`. Reproduced when the
  whole 95% interval of the mean is on the right side; not reproduced when it is wholly on
  the wrong side; else inconclusive.
- `fails`: the cell is no better than the trivial baseline. Reproduced when a one-sided
  test (Welch's or paired t, as the verdicts) finds no improvement at alpha; not
  reproduced when it does.
- `ordering`: `better` beats `worse`. Each side is a cell of the row `where` picks, or a
  mapping of grid axes that replaces some of `where` (`{cell.units: 128}` against
  `{cell.units: 16}`: one cell at two widths). Reproduced when the two-sided test of the
  verdicts says so at alpha in the claimed direction; not reproduced when it says the
  opposite; else inconclusive.
- `number`: the paper's figure, within `tolerance`. Reproduced when the mean is inside the
  band; not reproduced when the whole interval is outside it; else inconclusive.
- `importance`: in a tuned grid, `parameter` matters most to the entry's score: fANOVA
  (Optuna's, as sweeps report it) ranks it first among the searched keys. Reproduced when
  it is first under every one of IMPORTANCE_FITS forests, not reproduced when it is first
  under none; else inconclusive. It reads the entry's tuning study, not its seeds.

Fewer than 2 seeds is always inconclusive: one run proves nothing either way.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from rnnlab.config import ConfigError
from rnnlab.reports.verdicts import ALPHA, Scores, better_than, compare, summarize

KINDS = ("solves", "fails", "ordering", "number", "importance")
# fANOVA fits a random forest; a ranking that holds under several seeds of it is not luck.
IMPORTANCE_FITS = 5
# Fewer completed trials than this leave fANOVA too little to rank keys by.
IMPORTANCE_TRIALS = 10
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"


@dataclass(frozen=True)
class Claim:
    """One published result and what counts as reproducing it."""

    source: str  # paper, and figure or table
    published: str  # the published outcome, in one sentence
    kind: str  # one of KINDS
    where: dict[str, str]  # grid axes that pick the row (and the cell, but for ordering)
    figure: str = ""  # the paper's number as it prints it
    factor: float | None = None  # solves: the bar is factor × baseline
    threshold: float | None = None  # solves: or a fixed bar
    better: str | dict[str, str] | None = None  # ordering: a cell, or axes replacing `where`'s
    worse: str | dict[str, str] | None = None
    value: float | None = None  # number
    tolerance: float | None = None
    parameter: str | None = None  # importance: the searched key that should matter most

    @classmethod
    def from_config(cls, number: int, raw: Any) -> Claim:
        """A claim from the experiment's `claims:` list, checked: one line per mistake."""
        where = f"claims[{number}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: a claim is a mapping of source, published, kind, where")
        known = set(cls.__dataclass_fields__)
        unknown = [key for key in raw if key not in known]
        if unknown:
            raise ConfigError(f"{where}: unknown key '{unknown[0]}'; known: {sorted(known)}")
        for key in ("source", "published", "kind", "where"):
            if not raw.get(key):
                raise ConfigError(f"{where}: '{key}' is required")

        def axes(value: Any) -> Any:
            if isinstance(value, dict):
                return {str(k): str(v) for k, v in value.items()}
            return value

        claim = cls(
            **{**raw, **{key: axes(raw[key]) for key in ("where", "better", "worse") if key in raw}}
        )
        needs = {
            "solves": claim.factor is not None or claim.threshold is not None,
            "fails": True,
            "ordering": bool(claim.better and claim.worse),
            "number": claim.value is not None and claim.tolerance is not None,
            "importance": bool(claim.parameter),
        }
        if claim.kind not in needs:
            raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, not {claim.kind}")
        if not needs[claim.kind]:
            wanted = {
                "solves": "factor or threshold",
                "ordering": "better and worse",
                "number": "value and tolerance",
                "importance": "parameter",
            }[claim.kind]
            raise ConfigError(f"{where}: a '{claim.kind}' claim needs {wanted}")
        if claim.kind != "ordering" and "cell" not in claim.where:
            raise ConfigError(f"{where}: 'where' must name the cell (cell: ...)")
        if claim.kind == "ordering":
            for side in claim.sides().values():
                if "cell" not in side:
                    raise ConfigError(f"{where}: each side of an ordering must name its cell")
        return claim

    def sides(self) -> dict[str, dict[str, str]]:
        """An ordering's two sides as their labels and the grid axes each picks."""
        found: dict[str, dict[str, str]] = {}
        for side in (self.better, self.worse):
            changed = side if isinstance(side, dict) else {"cell": str(side)}
            axes = {**self.where, **changed}
            found[side_label(side, axes)] = axes
        return found


def side_label(side: str | dict[str, str] | None, axes: dict[str, str]) -> str:
    """A cell's name, or the cell with the axes its side changes (`gru cell.units=128`)."""
    if not isinstance(side, dict):
        return str(side)
    changed = " ".join(f"{key}={value}" for key, value in side.items() if key != "cell")
    return f"{axes.get('cell', '')} {changed}".strip()


@dataclass(frozen=True)
class Finding:
    """What the runs say of one claim."""

    outcome: str  # REPRODUCED, NOT_REPRODUCED or INCONCLUSIVE
    ours: str  # mean, interval and n, as the table shows them
    reason: str  # the test or bound that decided


def ours_text(scores: Scores) -> str:
    if not scores:
        return "no runs"
    summary = summarize(list(scores.values()))
    interval = f" [{summary.low:.4g}, {summary.high:.4g}]" if summary.low is not None else ""
    return f"{summary.mean:.4g}{interval} (n={summary.n})"


def judge_claim(
    claim: Claim,
    scores: dict[str, Scores],
    direction: str,
    baseline: Scores | None,
    alpha: float = ALPHA,
) -> Finding:
    """The claim's outcome from the row's scores by cell (and its baseline's)."""
    if claim.kind == "importance":
        raise ValueError("an importance claim is judged from its study: judge_importance")
    if claim.kind == "ordering":
        (better_label, worse_label) = claim.sides()
        better, worse = scores.get(better_label, {}), scores.get(worse_label, {})
        ours = f"{better_label} {ours_text(better)}; {worse_label} {ours_text(worse)}"
        if min(len(better), len(worse)) < 2:
            return Finding(INCONCLUSIVE, ours, "too few seeds")
        test = compare(better, worse)
        assert test.p is not None
        ahead = better_than(direction)(
            statistics.mean(better.values()), statistics.mean(worse.values())
        )
        if test.p >= alpha:
            return Finding(INCONCLUSIVE, ours, f"{test.test}: p = {test.p:.2g}")
        outcome = REPRODUCED if ahead else NOT_REPRODUCED
        return Finding(outcome, ours, f"{test.test}: p = {test.p:.2g}")
    cell = scores.get(claim.where["cell"], {})
    ours = ours_text(cell)
    if len(cell) < 2:
        return Finding(INCONCLUSIVE, ours, "too few seeds")
    summary = summarize(list(cell.values()))
    assert summary.low is not None and summary.high is not None
    if claim.kind == "number":
        assert claim.value is not None and claim.tolerance is not None
        low, high = claim.value - claim.tolerance, claim.value + claim.tolerance
        band = f"{claim.value:g} ± {claim.tolerance:g}"
        if low <= summary.mean <= high:
            return Finding(REPRODUCED, ours, f"mean within {band}")
        if summary.high < low or summary.low > high:
            return Finding(NOT_REPRODUCED, ours, f"interval outside {band}")
        return Finding(INCONCLUSIVE, ours, f"mean outside {band}, interval overlaps it")
    if not baseline and (claim.kind == "fails" or claim.threshold is None):
        return Finding(INCONCLUSIVE, ours, "the task logged no baseline")
    if claim.kind == "fails":
        assert baseline is not None
        test = compare(cell, baseline)
        assert test.p is not None
        ahead = better_than(direction)(summary.mean, statistics.mean(baseline.values()))
        one_sided = test.p / 2 if ahead else 1 - test.p / 2
        reason = f"one-sided {test.test} against the baseline: p = {one_sided:.2g}"
        return Finding(NOT_REPRODUCED if one_sided < alpha else REPRODUCED, ours, reason)
    # solves
    if claim.threshold is not None:
        bar, named = claim.threshold, f"{claim.threshold:g}"
    else:
        assert baseline is not None and claim.factor is not None
        bar = claim.factor * statistics.mean(baseline.values())
        named = f"{claim.factor:g} × baseline = {bar:.4g}"
    beats = better_than(direction)
    near, far = (
        (summary.low, summary.high) if direction == "maximize" else (summary.high, summary.low)
    )
    if beats(near, bar) or near == bar:
        return Finding(REPRODUCED, ours, f"whole interval beyond {named}")
    if not beats(far, bar):
        return Finding(NOT_REPRODUCED, ours, f"whole interval short of {named}")
    return Finding(INCONCLUSIVE, ours, f"interval straddles {named}")


def judge_importance(claim: Claim, fits: list[dict[str, float]], trials: int) -> Finding:
    """An importance claim from fANOVA's importances under several forest seeds (`fits`),
    of a study with `trials` completed trials."""
    assert claim.parameter is not None  # from_config checked
    if not fits or trials < IMPORTANCE_TRIALS:
        return Finding(INCONCLUSIVE, f"{trials} trials", f"fANOVA needs {IMPORTANCE_TRIALS}")
    if claim.parameter not in fits[0]:
        raise ConfigError(f"claim on '{claim.parameter}': the study searched {sorted(fits[0])}")
    mean = {key: statistics.mean(fit.get(key, 0.0) for fit in fits) for key in fits[0]}
    ranked = sorted(mean, key=mean.__getitem__, reverse=True)
    ours = ", ".join(f"{key} {mean[key]:.2f}" for key in ranked[:3]) + f" ({trials} trials)"
    first = sum(max(fit, key=fit.__getitem__) == claim.parameter for fit in fits)
    reason = f"first in {first} of {len(fits)} fANOVA fits"
    if first == len(fits):
        return Finding(REPRODUCED, ours, reason)
    return Finding(NOT_REPRODUCED if first == 0 else INCONCLUSIVE, ours, reason)


def claims_table(rows: list[tuple[Claim, Finding]]) -> str:
    """The report's Claims section: each claim, the paper's figure, ours, the outcome."""
    if not rows:
        return ""
    lines = [
        "\n## Claims\n",
        "| claim | source | paper's figure | ours (mean [95% interval] (n)) | outcome |",
        "|---|---|---|---|---|",
    ]
    for claim, finding in rows:
        outcome = f"**{finding.outcome}**" if finding.outcome == REPRODUCED else finding.outcome
        lines.append(
            f"| {claim.published} | {claim.source} | {claim.figure or '—'} | {finding.ours} | "
            f"{outcome} ({finding.reason}) |"
        )
    counted = {o: sum(f.outcome == o for _, f in rows) for o in (REPRODUCED, NOT_REPRODUCED)}
    lines += [
        "",
        f"{counted[REPRODUCED]} of {len(rows)} claims reproduced, {counted[NOT_REPRODUCED]} "
        f"not reproduced, the rest inconclusive. A claim is judged from the seeds: "
        f"`solves` needs the whole 95% interval past its bar, `fails` no significant "
        f"improvement on the baseline (one-sided, alpha {ALPHA:g}), `ordering` a significant "
        f"difference in the claimed direction, `number` the mean within the stated "
        f"tolerance, `importance` the key first under every fANOVA fit of the tuning study; "
        f"fewer than 2 seeds is inconclusive.",
    ]
    return "\n".join(lines) + "\n"
