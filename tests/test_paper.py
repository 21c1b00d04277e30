"""Paper experiments end to end: resumable runs, reports that hold MLflow's numbers, reruns."""

from __future__ import annotations

import json
import re
import statistics

import mlflow
import pytest
from mlflow import MlflowClient
from scipy import stats

import rnnlab.training.run
from rnnlab.config import (
    ConfigError,
    compose_config,
    compose_many,
    config_hash,
    with_experiment_task_overrides,
)
from rnnlab.experiments.grids import experiment_grid
from rnnlab.experiments.paper import run_experiment
from rnnlab.records import names
from rnnlab.reports.report import Cell, markdown_table, write_report
from rnnlab.training.callbacks import NonFiniteLossError
from rnnlab.training.reproduce import ReproduceError, reproduce


def newest_run(tracking_uri):
    """The run `reproduce` just made: it returns the comparison, not the run, so the newest
    in the store."""
    client = MlflowClient(tracking_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    [newest] = client.search_runs(
        experiments, order_by=["attributes.start_time DESC"], max_results=1
    )
    return newest


def test_smoke_grid_is_tasks_by_cells_by_seeds():
    grid = experiment_grid("smoke")
    assert len(grid) == 2 * 2 * 2
    assert grid[0].overrides == ["experiment=smoke", "task=adding", "cell=simple_rnn", "seed=0"]
    assert grid[-1].axes == ["task=copy_memory", "cell=lstm", "seed=1"]
    assert grid[-1].overrides[-1] == "task.delay=20", "the experiment's own size for copy memory"


@pytest.mark.parametrize("experiment", ["smoke", "cells_vs_tasks"])
def test_rnnlab_train_with_an_experiment_runs_the_configurations_rnnlab_paper_runs(experiment):
    """`rnnlab train -m experiment=NAME` composes each point from its axes alone, then adds
    the experiment's overrides for the point's task, as `rnnlab paper` does."""
    grid = experiment_grid(experiment)
    assert any(point.overrides[-1] not in point.axes for point in grid)  # task overrides
    for point in grid[:: max(1, len(grid) // 7)]:
        given = [f"experiment={experiment}", *point.axes]
        cfg = with_experiment_task_overrides(compose_config(given), given)
        assert config_hash(cfg) == config_hash(compose_config(point.overrides)), point.axes


def test_a_key_given_on_the_command_line_keeps_its_value_over_the_experiments():
    given = ["experiment=smoke", "task=copy_memory", "task.delay=30"]
    cfg = with_experiment_task_overrides(compose_config(given), given)
    assert cfg.task.delay == 30  # smoke's copy_memory override says 20
    cfg = with_experiment_task_overrides(compose_config(given[:2]), given[:2])
    assert cfg.task.delay == 20


def test_unknown_experiment_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown experiment 'nope'; choose one of: .*smoke"):
        experiment_grid("nope")


# What a smoke run may leave out when only its metrics and probe curves are read; tracking
# keys are no part of a configuration's identity, so the report finds the runs as its own.
LEAN_RUNS = ["tracking.log_model=false", "tracking.system_metrics=false"]


@pytest.mark.slow
def test_paper_resumes_after_a_kill_and_reports_what_mlflow_holds(tmp_path, monkeypatch):
    """The smoke grid is tuned (2 trials per entry, then 2 seeds): killed once while tuning
    and once while training seeds, it resumes without repeating a finished trial or seed."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # Without what the report does not read: stored models and system metrics.
    given = [f"tracking.uri={uri}", *LEAN_RUNS]
    real_run, calls = rnnlab.training.run.run, []

    def killed_at(call: int):
        def run(cfg, **kwargs):
            calls.append(cfg)
            if len(calls) == call:
                raise KeyboardInterrupt
            return real_run(cfg, **kwargs)

        return run

    # Call 3 is the second entry's first trial; after it resumes, its 6 trials, then seeds.
    monkeypatch.setattr(rnnlab.training.run, "run", killed_at(3))
    with pytest.raises(KeyboardInterrupt):
        run_experiment("smoke", given)
    calls.clear()
    monkeypatch.setattr(rnnlab.training.run, "run", killed_at(9))
    with pytest.raises(KeyboardInterrupt):
        run_experiment("smoke", given)
    assert [cfg.seed for cfg in calls] == [100] * 6 + [0, 1, 0]
    calls.clear()
    monkeypatch.setattr(rnnlab.training.run, "run", killed_at(0))
    assert run_experiment("smoke", given) == {
        "ran": 6,
        "skipped": 2,
        "failed": 0,
        "left": 0,
    }
    assert len(calls) == 6 and {cfg.seed for cfg in calls} == {0, 1}  # no trial again
    assert run_experiment("smoke", given) == {
        "ran": 0,
        "skipped": 8,
        "failed": 0,
        "left": 0,
    }
    assert len(calls) == 6
    chosen = assert_every_entry_had_two_trials(f"sqlite:///{tmp_path}/optuna.db")
    # Each seed trained at its entry's best trial's learning rate.
    assert {(cfg.task.name, cfg.optimizer.learning_rate) for cfg in calls} <= chosen

    out = write_report("smoke", uri, out_dir=tmp_path / "report")
    table = (out / "table.md").read_text()
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{names.EXPERIMENT}` = 'smoke' and attributes.status = 'FINISHED'",
    )
    assert len(runs) == 8
    for task in ("adding", "copy_memory"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {task} |"))
        for cell in ("lstm", "simple_rnn"):
            task_runs = [
                run
                for run in runs
                if run.data.tags[names.TASK] == task and run.data.tags[names.CELL] == cell
            ]
            values = [run.data.metrics["test_loss"] for run in task_runs]
            expected = f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} (n=2)"
            assert expected in row, (task, cell, row)
            interval = stats.ttest_1samp(values, 0).confidence_interval()
            assert f"[{interval.low:.4f}, {interval.high:.4f}]" in row
            n_params = int(task_runs[0].data.metrics["n_params"])
            assert f"{n_params:,} params" in row
        # Two seeds of two tiny cells learn nothing the baseline does not: nothing is bold.
        assert "**" not in row and " n < 5<br>" in row, row
        # Two paired seeds: the signed-rank test cannot go below 2/2² and says so.
        assert row.endswith("signed-rank: p = 1 (cannot go below 0.5 with these seeds) |"), row
        assert re.search(r"no cell beats the baseline \(p = [0-9.e-]+\)", row), row
        assert row.count(" against ") == 2, "the other cell and the baseline against the best"
    assert r"\textbf" not in (out / "table.tex").read_text()
    assert "Holm" in table and "Student-t" in (out / "table.tex").read_text()
    across = (out / "README.md").read_text()
    assert "## Across tasks" in across and "Friedman's test needs at least 3 cells" in across
    assert "critical_difference.png" in across
    assert "## Claims" in across and "| Two epochs of an 8-unit SimpleRNN learn nothing" in across
    assert "## Tuning" in across and "2 trials of random" in across
    # What the claims cost travels with them: the 8 seeds and the 8 completed trials.
    record = json.loads((out / "claims.json").read_text())
    (claim,) = record["claims"]
    assert claim["published"].startswith("Two epochs of an 8-unit SimpleRNN learn nothing")
    assert (
        f"{claim['outcome']}{'**' * (claim['outcome'] == 'reproduced')} ({claim['reason']})"
        in across
    )
    assert (record["compute"]["runs"], record["compute"]["tuning_trials"]) == (16, 8)
    assert record["compute"]["cpus"] == sorted({run.data.tags[names.CPU] for run in runs})
    assert "## Compute\n\n16 runs (8 of them tuning trials)" in across
    for figure in (
        "00_adding_gradient_decay.png",
        "01_copy_memory_learning_curves.png",
        "critical_difference.png",
    ):
        assert (out / figure).stat().st_size > 1000
    report_runs = client.search_runs(
        [client.get_experiment_by_name("reports").experiment_id], f"tags.`{names.REPORT}` = 'smoke'"
    )
    report_run = report_runs[0].info.run_id
    artifacts = {a.path for a in client.list_artifacts(report_run, names.REPORT_FOLDER)}
    assert "report/table.md" in artifacts
    assert_seed_groups(client, runs)
    write_report("smoke", uri, out_dir=tmp_path / "again")
    assert_seed_groups(client, runs)  # the same groups: a second report logs no new ones


def assert_every_entry_had_two_trials(storage: str) -> set[tuple[str, float]]:
    """Each entry's study has 2 completed trials (one was interrupted: not counted, run
    again); returns (task, best learning rate) of every entry."""
    import optuna

    chosen = set()
    studies = optuna.get_all_study_summaries(storage)
    assert len(studies) == 4
    for summary in studies:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        completed = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert len(completed) == 2, summary.study_name
        task = summary.study_name.split("task-")[1].split("_cell")[0]
        chosen.add((task, study.best_params["optimizer.learning_rate"]))
    return chosen


def assert_seed_groups(client: MlflowClient, runs) -> None:
    """One group run per (task, cell) holds its seeds' mean, std and count; the seed
    runs are its children."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    groups = client.search_runs(experiments, f"tags.`{names.SEED_GROUP}` = 'smoke'")
    assert len(groups) == 4
    for group in groups:
        seeds = [
            run
            for run in runs
            if run.data.tags[names.TASK] == group.data.tags[names.TASK]
            and run.data.tags[names.CELL] == group.data.tags[names.CELL]
        ]
        losses = [run.data.metrics["test_loss"] for run in seeds]
        assert group.data.metrics["test_loss"] == pytest.approx(statistics.mean(losses))
        assert group.data.metrics["test_loss_std"] == pytest.approx(statistics.stdev(losses))
        assert group.data.metrics["n_seeds"] == 2 and "seed" not in group.data.params
        assert group.data.params["cell.units"] == seeds[0].data.params["cell.units"]
        for seed in seeds:
            parent = client.get_run(seed.info.run_id).data.tags["mlflow.parentRunId"]
            assert parent == group.info.run_id


def test_a_diverging_configuration_is_counted_and_the_experiment_goes_on(tmp_path, monkeypatch):
    def diverging(cfg, **kwargs):
        raise NonFiniteLossError(f"loss became nan for {cfg.task.name}")

    monkeypatch.setattr(rnnlab.training.run, "run", diverging)
    untuned = [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "tune=null"]
    assert run_experiment("smoke", untuned) == {"ran": 0, "skipped": 0, "failed": 8, "left": 0}
    # Tuned: every trial diverges, so no entry has values to train its seeds at.
    tuned = [f"tracking.uri=sqlite:///{tmp_path}/tuned.db"]
    assert run_experiment("smoke", tuned) == {"ran": 0, "skipped": 0, "failed": 0, "left": 8}


def cells(**scores: list[float]) -> dict[str, Cell]:
    table = {}
    for column, values in scores.items():
        table[column] = Cell()
        for seed, value in enumerate(values):
            table[column].add(seed, value, n_params=1000)
    return table


def test_only_a_significant_winner_above_the_baseline_is_bold():
    separated = cells(gru=[0.90, 0.91, 0.92], lstm=[0.70, 0.72, 0.71], baseline=[0.5, 0.5, 0.5])
    close = cells(gru=[0.75, 0.77, 0.78], lstm=[0.76, 0.75, 0.77], baseline=[0.5, 0.5, 0.5])
    table = {"separated": separated, "close": close}
    rows = markdown_table(
        table,
        {"separated": "maximize", "close": "maximize"},
        {"separated": "accuracy", "close": "accuracy"},
    ).splitlines()
    assert rows[2].count("**") == 2 and "| **0.9100 ± 0.0100 (n=3)<br>" in rows[2]
    assert "gru best (p = " in rows[2] and "1,000 params" in rows[2]
    assert "**" not in rows[3] and "no significant difference (p = " in rows[3]


def test_a_tie_is_not_bolded():
    tied = cells(lstm=[0.5, 0.5], gru=[0.5, 0.5])
    row = markdown_table({"t": tied}, {"t": "maximize"}, {"t": "accuracy"}).splitlines()[2]
    assert "**" not in row and "| tie; n < 5 |" in row


def test_report_shows_missing_cells_instead_of_failing(tmp_path):
    out = write_report("smoke", f"sqlite:///{tmp_path}/empty.db", out_dir=tmp_path / "report")
    rows = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("| ")]
    assert rows[1:] == [
        "| adding | test loss ↓ | missing | missing | no runs |",
        "| copy_memory | test loss ↓ | missing | missing | no runs |",
    ]


@pytest.mark.slow
def test_reproduce_matches_exactly_with_reproducible_true(compose, tracking_uri):
    run_overrides = ("task=adding", "task.length=20", "cell.units=4", "reproducible=true")
    original = rnnlab.training.run.run(compose(*run_overrides)).run_id
    compared, warnings = reproduce(original, tracking_uri)
    assert compared and all(before == after for before, after in compared.values()), compared
    assert warnings == []
    again = newest_run(tracking_uri)
    assert again.info.run_id != original
    assert again.data.tags[names.REPRODUCES] == original


def test_reproduce_warns_about_nondeterminism_and_another_recurrence_route(compose, tracking_uri):
    original = rnnlab.training.run.run(
        compose("task=adding", "task.length=10", "cell.units=4", "trainer.epochs=1")
    ).run_id
    route_now = MlflowClient(tracking_uri).get_run(original).data.tags[names.RECURRENCE]
    # As if recorded on a machine where the native ops did not build.
    MlflowClient(tracking_uri).set_tag(original, names.RECURRENCE, "graph+keras")
    _, warnings = reproduce(original, tracking_uri)
    assert warnings == [
        "the recurrence routes (native ops, graph or Keras loop) differ: "
        f"graph+keras then, {route_now} now",
        "the original did not ask for reproducible=true: expect small differences",
    ]


def test_reproduce_unknown_run_names_the_store(tracking_uri):
    with pytest.raises(ReproduceError, match=f"no run 0123abcd in {re.escape(tracking_uri)}"):
        reproduce("0123abcd", tracking_uri)


def test_reproduce_a_run_without_config_says_so(tracking_uri):
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run() as foreign:
        mlflow.log_metric("test_accuracy", 0.5)
    with pytest.raises(ReproduceError, match="has no config.yaml artifact"):
        reproduce(foreign.info.run_id, tracking_uri)


def test_reproducing_a_sweep_trial_makes_a_run_of_its_own(compose, tracking_uri):
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_name="a sweep") as sweep:
        pass
    overrides = ("task=adding", "task.length=10", "cell.units=4", "trainer.epochs=1")
    trial = rnnlab.training.run.run(
        compose(*overrides, f"tracking.parent_run_id={sweep.info.run_id}")
    ).run_id
    client = MlflowClient(tracking_uri)
    assert client.get_run(trial).data.tags["mlflow.parentRunId"] == sweep.info.run_id
    reproduce(trial, tracking_uri)
    again = newest_run(tracking_uri)
    assert again.data.tags[names.REPRODUCES] == trial
    assert "mlflow.parentRunId" not in again.data.tags


def test_a_task_override_may_interpolate_a_grid_axis():
    """long_range sets task.length (adding) and task.delay (copy memory) from its horizon axis."""
    points = experiment_grid("long_range")
    sample = [point for point in points if "cell=gru" in point.axes and "seed=0" in point.axes]
    configs = compose_many([point.overrides for point in sample])
    lengths = {
        (cfg.task.name, cfg.horizon): cfg.task.get("length", cfg.task.get("delay"))
        for cfg in configs
    }
    assert lengths == {
        ("adding", 100): 100,
        ("adding", 1000): 1000,
        ("copy_memory", 100): 100,
        ("copy_memory", 1000): 1000,
    }
