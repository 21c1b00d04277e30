"""Published claims judged from seeds, on fixed scores whose outcome is clear by hand."""

from __future__ import annotations

import pytest

from rnnlab.config import ConfigError
from rnnlab.reports.known_results import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Claim,
    claims_table,
    judge_claim,
    judge_importance,
)

BASELINE = {0: 0.167, 1: 0.166, 2: 0.168, 3: 0.167}  # the adding problem's MSE of always 1


def claim(kind: str, **settings) -> Claim:
    where = settings.pop("where", {"task": "adding", "cell": "lstm"})
    return Claim.from_config(
        0, {"source": "paper, Fig. 1", "published": "it", "kind": kind, "where": where, **settings}
    )


def by_seed(*values: float) -> dict[int, float]:
    return dict(enumerate(values))


def test_solves_needs_the_whole_interval_past_the_bar():
    solves = claim("solves", factor=0.1)  # MSE at most 0.0167
    clearly = {"lstm": by_seed(0.004, 0.005, 0.003, 0.004)}
    short = {"lstm": by_seed(0.15, 0.16, 0.17, 0.16)}
    straddles = {"lstm": by_seed(0.001, 0.03, 0.002, 0.03)}
    assert judge_claim(solves, clearly, "minimize", BASELINE).outcome == REPRODUCED
    assert judge_claim(solves, short, "minimize", BASELINE).outcome == NOT_REPRODUCED
    assert judge_claim(solves, straddles, "minimize", BASELINE).outcome == INCONCLUSIVE
    accuracy = claim("solves", threshold=0.9)
    assert judge_claim(accuracy, {"lstm": by_seed(0.97, 0.96, 0.98)}, "maximize", None).outcome == (
        REPRODUCED
    )


def test_fails_is_no_significant_improvement_on_the_baseline():
    fails = claim("fails")
    at_baseline = {"lstm": by_seed(0.166, 0.169, 0.165, 0.168)}
    far_below = {"lstm": by_seed(0.01, 0.02, 0.015, 0.012)}
    worse = {"lstm": by_seed(0.30, 0.31, 0.29, 0.30)}  # worse than trivial still fails
    assert judge_claim(fails, at_baseline, "minimize", BASELINE).outcome == REPRODUCED
    assert judge_claim(fails, far_below, "minimize", BASELINE).outcome == NOT_REPRODUCED
    assert judge_claim(fails, worse, "minimize", BASELINE).outcome == REPRODUCED
    assert judge_claim(fails, at_baseline, "minimize", None).outcome == INCONCLUSIVE


def test_ordering_needs_a_significant_difference_in_the_claimed_direction():
    ordering = claim("ordering", better="gru", worse="simple_rnn", where={"task": "adding"})
    scores = {"gru": by_seed(0.01, 0.02, 0.015), "simple_rnn": by_seed(0.16, 0.17, 0.165)}
    assert judge_claim(ordering, scores, "minimize", BASELINE).outcome == REPRODUCED
    assert judge_claim(ordering, scores, "maximize", None).outcome == NOT_REPRODUCED
    close = {"gru": by_seed(0.10, 0.16, 0.12), "simple_rnn": by_seed(0.11, 0.15, 0.14)}
    finding = judge_claim(ordering, close, "minimize", BASELINE)
    assert finding.outcome == INCONCLUSIVE and finding.reason.startswith("paired t: p = ")


def test_number_is_the_mean_within_the_tolerance():
    number = claim("number", value=0.97, tolerance=0.02)
    near = judge_claim(number, {"lstm": by_seed(0.96, 0.95, 0.97)}, "maximize", None)
    assert near.outcome == REPRODUCED and near.ours.startswith("0.96 [")
    far = judge_claim(number, {"lstm": by_seed(0.80, 0.81, 0.79)}, "maximize", None)
    assert far.outcome == NOT_REPRODUCED
    wide = judge_claim(number, {"lstm": by_seed(0.90, 0.99, 0.92)}, "maximize", None)
    assert wide.outcome == INCONCLUSIVE  # mean 0.937 outside 0.95-0.99, interval reaches it


def test_one_seed_is_inconclusive_whatever_it_says():
    one = {"lstm": by_seed(0.001)}
    for kind, settings in [
        ("solves", {"factor": 0.1}),
        ("fails", {}),
        ("number", {"value": 0.0, "tolerance": 1.0}),
    ]:
        finding = judge_claim(claim(kind, **settings), one, "minimize", BASELINE)
        assert (finding.outcome, finding.reason) == (INCONCLUSIVE, "too few seeds")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"kind": "solves", "where": {"cell": "lstm"}, "published": "x"}, "'source' is required"),
        ({"source": "s", "published": "x", "kind": "wins", "where": {"cell": "l"}}, "kind must"),
        ({"source": "s", "published": "x", "kind": "solves", "where": {"cell": "l"}}, "factor or"),
        ({"source": "s", "published": "x", "kind": "fails", "where": {"task": "a"}}, "the cell"),
        ({"source": "s", "published": "x", "kind": "fails", "where": {"cell": "l"}, "n": 1}, "'n'"),
    ],
)
def test_a_malformed_claim_fails_in_one_line_naming_it(raw, message):
    with pytest.raises(ConfigError, match=message) as error:
        Claim.from_config(3, raw)
    assert str(error.value).startswith("claims[3]: ") and "\n" not in str(error.value)


def test_the_table_counts_outcomes_and_bolds_only_reproduced():
    solves = claim("solves", factor=0.1, figure="MSE 0.004")
    rows = [
        (solves, judge_claim(solves, {"lstm": by_seed(0.004, 0.005, 0.003)}, "minimize", BASELINE)),
        (solves, judge_claim(solves, {"lstm": by_seed(0.15, 0.16, 0.17)}, "minimize", BASELINE)),
    ]
    table = claims_table(rows)
    assert "| it | paper, Fig. 1 | MSE 0.004 | 0.004 [" in table
    assert table.count("**reproduced**") == 1 and "| not reproduced (whole interval short" in table
    assert "1 of 2 claims reproduced, 1 not reproduced" in table


def test_a_claim_finds_its_row_or_names_what_no_point_has():
    from rnnlab.experiments.grids import GridPoint, PointFacts
    from rnnlab.reports.report import claim_row

    points = [
        (
            GridPoint([f"task={task}", f"task.length={length}", "cell=lstm", "seed=0"], []),
            PointFacts("hash", task, "loss", "minimize", "lstm"),
        )
        for task in ("adding",)
        for length in (100, 200)
    ]
    at_200 = claim("solves", factor=0.1, where={"task": "adding", "task.length": 200, "cell": "l"})
    assert claim_row(0, at_200.where, points) == "adding (length=200)"
    nowhere = claim("fails", where={"task": "adding", "task.length": 400, "cell": "lstm"})
    with pytest.raises(
        ConfigError, match=r"claims\[2\]: no grid point has task=adding task.length=400"
    ):
        claim_row(2, nowhere.where, points)


def test_an_ordering_side_may_sit_in_another_row():
    from rnnlab.experiments.grids import GridPoint, PointFacts
    from rnnlab.reports.report import claim_row

    wider = claim(
        "ordering",
        where={"task": "associative_recall", "task.pairs": 8, "cell": "gru"},
        better={"cell.units": 128},
        worse={"cell.units": 16},
    )
    sides = wider.sides()
    assert list(sides) == ["gru cell.units=128", "gru cell.units=16"]
    points = [
        (
            GridPoint([f"task.pairs={pairs}", f"cell.units={units}", "cell=gru", "seed=0"], []),
            PointFacts("hash", "associative_recall", "accuracy", "maximize", "gru"),
        )
        for pairs in (2, 8)
        for units in (16, 128)
    ]
    rows = [claim_row(0, axes, points) for axes in sides.values()]
    assert rows == [
        "associative_recall (pairs=8, cell.units=128)",
        "associative_recall (pairs=8, cell.units=16)",
    ]
    scores = {
        "gru cell.units=128": by_seed(0.9, 0.95, 0.92),
        "gru cell.units=16": by_seed(0.3, 0.35, 0.33),
    }
    assert judge_claim(wider, scores, "maximize", None).outcome == REPRODUCED
    with pytest.raises(ConfigError, match="each side of an ordering must name its cell"):
        claim("ordering", where={"task": "adding"}, better={"cell.units": 8}, worse="gru")


def test_importance_needs_the_parameter_first_under_every_fit():
    lr = claim("importance", parameter="optimizer.learning_rate")
    first = {"optimizer.learning_rate": 0.7, "cell.units": 0.2, "cell.dropout": 0.1}
    second = {"optimizer.learning_rate": 0.3, "cell.units": 0.6, "cell.dropout": 0.1}
    always = judge_importance(lr, [first] * 5, 30)
    assert always.outcome == REPRODUCED and always.reason == "first in 5 of 5 fANOVA fits"
    assert (
        always.ours
        == "optimizer.learning_rate 0.70, cell.units 0.20, cell.dropout 0.10 (30 trials)"
    )
    assert judge_importance(lr, [second] * 5, 30).outcome == NOT_REPRODUCED
    assert judge_importance(lr, [first, first, second, first, first], 30).outcome == INCONCLUSIVE
    few = judge_importance(lr, [first] * 5, 9)
    assert few.outcome == INCONCLUSIVE and few.reason == "fANOVA needs 10"
    with pytest.raises(ConfigError, match="the study searched"):
        judge_importance(claim("importance", parameter="cell.nope"), [first], 30)
    with pytest.raises(ConfigError, match="needs parameter"):
        claim("importance")


def claims_report(reports, name, outcomes, compute):
    """A report's claims.json, as `rnnlab report` writes it, with one claim per outcome."""
    import json

    claims = [
        {
            "published": f"{name} claim {n}",
            "source": "paper",
            "figure": "",
            "ours": "0.1 (n=3)",
            "outcome": outcome,
            "reason": "why",
        }
        for n, outcome in enumerate(outcomes)
    ]
    (reports / name).mkdir(parents=True, exist_ok=True)
    (reports / name / "claims.json").write_text(
        json.dumps({"experiment": name, "claims": claims, "compute": compute})
    )


COMPUTE = {
    "runs": 12,
    "tuning_trials": 4,
    "run_hours": 0.5,
    "span_hours": 0.3,
    "first_start": 0,
    "cpus": ["Intel Xeon"],
}


def test_the_reproduced_page_gathers_every_reports_claims(tmp_path):
    from rnnlab.reports.reproduced import keep, page

    reports, records, experiments = tmp_path / "reports", tmp_path / "records", tmp_path / "exp"
    experiments.mkdir()
    claims_report(reports, "a_exp", ["reproduced", "inconclusive"], COMPUTE)
    claims_report(reports, "b_exp", ["not reproduced"], COMPUTE)
    claims_report(reports, "smoke", ["reproduced"], COMPUTE)  # plumbing, not a paper
    (experiments / "c_exp.yaml").write_text("claims:\n  - {source: s}\n")  # never run
    (experiments / "d_exp.yaml").write_text("trainer: {epochs: 1}\n")  # states no claim
    assert keep(reports, records) == ["a_exp", "b_exp"]
    text = page(records, experiments)
    assert "| `a_exp` | 1 of 2 | 12 runs | 0.50 h | 0.30 h | Intel Xeon |" in text
    assert "| `b_exp` | 0 of 1 |" in text and "| `c_exp` | not run yet |" in text
    assert "d_exp" not in text and "smoke" not in text
    rows = [line for line in text.splitlines() if line.startswith("| `") and "claim" in line]
    assert [row.split(" | ")[1] for row in rows] == [
        "a_exp claim 0",
        "a_exp claim 1",
        "b_exp claim 0",
    ]
    assert rows[0].endswith("| **reproduced** (why) |")
    assert "1 of 3 claims reproduced, 1 not reproduced" in text


def test_a_fresh_clone_regenerates_the_page_and_a_rerun_replaces_only_its_row(tmp_path, capsys):
    """The records outlive the machine's reports: without any, the page comes out the same;
    one experiment's new report replaces that experiment's record and no other."""
    from rnnlab.reports.reproduced import main

    first, records, page = tmp_path / "first", tmp_path / "records", tmp_path / "page.md"
    claims_report(first, "a_exp", ["inconclusive"], COMPUTE)
    claims_report(first, "b_exp", ["reproduced"], COMPUTE)
    main([str(first), str(records), str(page)])
    published = page.read_text()
    fresh = tmp_path / "fresh"  # a clone's empty reports folder
    fresh.mkdir()
    page.unlink()
    main([str(fresh), str(records), str(page)])
    assert page.read_text() == published
    assert "no report in" in capsys.readouterr().out
    claims_report(fresh, "a_exp", ["reproduced"], {**COMPUTE, "runs": 6})
    main([str(fresh), str(records), str(page)])
    text = page.read_text()
    assert "| `a_exp` | 1 of 1 | 6 runs |" in text and "| `b_exp` | 1 of 1 | 12 runs |" in text
    assert "2 of 2 claims reproduced" in text
    assert "a_exp copied from" in capsys.readouterr().out


def test_the_reproduced_page_without_reports_or_records_says_what_to_run(tmp_path):
    from rnnlab.reports.reproduced import main

    with pytest.raises(SystemExit, match=r"no claims.json under .* no record in .*: run `rnnlab"):
        main([str(tmp_path), str(tmp_path / "records"), str(tmp_path / "page.md")])
    assert not (tmp_path / "page.md").exists()
    with pytest.raises(SystemExit, match="usage: .* REPORTS_DIR RECORDS_DIR OUTPUT.md"):
        main([str(tmp_path), str(tmp_path / "page.md")])


def test_a_broken_record_is_named_and_the_page_kept(tmp_path):
    from rnnlab.reports.reproduced import main

    reports, records, page = tmp_path / "reports", tmp_path / "records", tmp_path / "page.md"
    claims_report(reports, "a_exp", ["reproduced"], COMPUTE)
    main([str(reports), str(records), str(page)])
    published = page.read_text()
    (records / "b_exp.json").write_text('{"experiment": "b_exp", "claims": [')  # cut short
    with pytest.raises(SystemExit, match=r"b_exp.json is not a claims record \(JSONDecodeError"):
        main([str(reports), str(records), str(page)])
    (records / "b_exp.json").write_text('{"experiment": "b_exp", "claims": [{"source": "s"}]}')
    with pytest.raises(
        SystemExit, match=r"b_exp.json is not a claims record \(it lacks compute, figure, ours"
    ):
        main([str(reports), str(records), str(page)])
    assert page.read_text() == published
