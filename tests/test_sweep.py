"""Sweeps end to end: trials as nested MLflow runs, pruning, NaN, kill -9 and resume, workers.

Every check reads what Optuna's storage and MLflow recorded, as a user would afterwards.
"""

from __future__ import annotations

import fcntl
import itertools
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import keras
import mlflow
import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from rnnlab.cli import sweep_and_report
from rnnlab.config import CONF_DIR, PROJECT_ROOT, compose_config, validate
from rnnlab.experiments import sweep as sweeps
from rnnlab.experiments.objective import INTERRUPTED_ATTR, suggest
from rnnlab.experiments.study_storage import (
    RERUN_OF_ATTR,
    STALE_REASON,
    has_trials_to_run,
    open_study,
    requeue_stopped,
    stale_check_lock,
    storage_for,
    trials_counted,
)
from rnnlab.experiments.sweep import PARENT_RUN_ATTR, work
from rnnlab.experiments.sweep_file import load_sweep
from rnnlab.records import names
from rnnlab.tasks.sentiment import SentimentTask
from rnnlab.training.run import run

PLOTS = {"optimization_history", "intermediate_values", "parallel_coordinate", "param_importances"}


@pytest.fixture
def smoke_file(tmp_path):
    """smoke_file(**changes): sweeps/smoke.yaml with a unique study name and its own storage.

    The best-experiment file a sweep writes into conf/experiment/ is removed afterwards.
    """
    names: list[str] = []

    def write(**changes) -> Path:
        content = yaml.safe_load((PROJECT_ROOT / "sweeps" / "smoke.yaml").read_text())
        content |= {
            "study": f"smoke_{uuid.uuid4().hex[:8]}",
            "storage": f"sqlite:///{tmp_path}/optuna.db",
            **changes,
        }
        names.append(content["study"])
        path = tmp_path / f"{content['study']}.yaml"
        path.write_text(yaml.safe_dump(content))
        return path

    yield write
    for name in names:
        (CONF_DIR / "experiment" / f"{name}_best.yaml").unlink(missing_ok=True)
    if (CONF_DIR / "experiment").is_dir() and not any((CONF_DIR / "experiment").iterdir()):
        (CONF_DIR / "experiment").rmdir()


def child_runs(client: MlflowClient, parent_run_id: str):
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )


def assert_one_run_per_trial(study: optuna.Study, client: MlflowClient, n_trials: int, workers):
    """No trial lost or run twice: every trial has its own MLflow child run, and vice versa."""
    trials = study.get_trials()
    assert [trial.number for trial in trials] == list(range(len(trials)))
    # Workers that check the budget at the same moment may each start one more trial.
    assert n_trials <= trials_counted(study) <= n_trials + workers - 1
    assert all(trial.state.is_finished() for trial in trials)
    children = child_runs(client, study.user_attrs[PARENT_RUN_ATTR])
    assert sorted(int(child.data.tags[names.OPTUNA_TRIAL]) for child in children) == [
        trial.number for trial in trials
    ]
    assert {trial.user_attrs[names.TRIAL_RUN_ID] for trial in trials} == {
        child.info.run_id for child in children
    }


def sweep_command(*arguments: str, cwd: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "rnnlab.cli", "sweep", *arguments],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.mark.slow
def test_smoke_sweep_end_to_end_and_the_winner_retrains(smoke_file, tracking_uri, tmp_path):
    spec = load_sweep(smoke_file(), [f"tracking.uri={tracking_uri}"])
    study = sweep_and_report(spec)
    client = MlflowClient(tracking_uri)

    trials = study.get_trials()
    assert len(trials) == 4
    assert {trial.state for trial in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert_one_run_per_trial(study, client, n_trials=4, workers=1)
    parent_run_id = study.user_attrs[PARENT_RUN_ATTR]
    for trial in trials:
        child = client.get_run(trial.user_attrs[names.TRIAL_RUN_ID])
        assert child.data.tags["mlflow.parentRunId"] == parent_run_id
        # Trials store no model and no system metrics unless the file asks (store_models).
        assert not child.outputs.model_outputs
        assert not any(name.startswith("system/") for name in child.data.metrics)
        assert child.data.params["cell.units"] == str(trial.params["cell.units"])
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        # MLflow's step is Keras's epoch index; Optuna's counts the epochs trained and gets
        # the best score so far.
        epoch_scores = [p.value for p in sorted(history, key=lambda p: p.step)]
        best_so_far = dict(enumerate(itertools.accumulate(epoch_scores, max), start=1))
        assert best_so_far == pytest.approx(trial.intermediate_values)
        if trial.state == TrialState.COMPLETE:
            assert child.info.status == "FINISHED"
            assert child.data.metrics["best_val_accuracy"] == pytest.approx(trial.value)
            assert trial.value == trial.intermediate_values[len(epoch_scores)]
            # The test split was scored on the weights of the epoch the value comes from.
            best_epoch = int(child.data.metrics["best_epoch"])
            assert child.data.metrics["tested_epoch"] == best_epoch
            assert epoch_scores[best_epoch - 1] == pytest.approx(trial.value)
        else:
            assert child.info.status == "KILLED"
            assert child.data.tags[names.PRUNED].startswith("Trial was pruned at epoch")

    parent = client.get_run(parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[names.SWEEP] == spec.name
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(study.best_value)
    best_run = client.get_run(study.best_trial.user_attrs[names.TRIAL_RUN_ID]).data.metrics
    for name in ("test_accuracy", "best_epoch"):
        assert parent.data.metrics[f"best_trial.{name}"] == best_run[name]
    assert parent.data.tags["best.cell"] == study.best_params["cell"]
    artifacts = {a.path for a in client.list_artifacts(parent_run_id, "plots")}
    assert "plots/sweep.html" in artifacts
    page = Path(client.download_artifacts(parent_run_id, "plots/sweep.html", str(tmp_path)))
    html = page.read_text()
    # Every plot, and Plotly's script inlined once: the page works on an offline machine.
    assert all(re.search(rf'Plotly.newPlot\(\s*"{name}"', html) for name in PLOTS)
    assert '<script src="https://cdn.plot.ly' not in html and len(html) > 3_000_000
    assert {"plots/fanova_importances.json", "plots/best_params.json"} <= artifacts
    importances = mlflow.load_table(
        "plots/fanova_importances.json", run_ids=[parent_run_id], extra_columns=[]
    )
    assert set(importances["param"]) == {"cell", "cell.units", "optimizer.learning_rate"}
    assert importances["importance"].sum() == pytest.approx(1.0)

    # The written experiment composes and validates like a shipped one (make test after a sweep).
    validate(compose_config([f"experiment={spec.name}_best"]))
    # The winner retrains with one command, with exactly the best trial's values.
    cfg = compose_config([f"experiment={spec.name}_best", f"tracking.uri={tracking_uri}"])
    best = study.best_params
    cell_target = compose_config([f"cell={best['cell']}"]).cell._target_
    assert cfg.cell._target_ == cell_target
    assert cfg.cell.units == best["cell.units"]
    assert cfg.optimizer.learning_rate == pytest.approx(best["optimizer.learning_rate"])
    assert (cfg.task.max_examples, cfg.trainer.epochs) == (128, 2)
    assert cfg.tracking.parent_run_id is None
    metrics = run(cfg).metrics
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert len(client.get_run(mlflow.last_active_run().info.run_id).outputs.model_outputs) == 1


@pytest.mark.slow
def test_a_multi_objective_sweep_reports_its_pareto_front(smoke_file, tracking_uri, tmp_path):
    changes = {
        "metric": ["accuracy", "n_params"],
        "pruner": "none",
        "n_trials": 3,  # each is checked on or off the front: three show it as four did
        "store_models": True,
    }
    spec = load_sweep(smoke_file(**changes), [f"tracking.uri={tracking_uri}"])
    study = sweep_and_report(spec)
    client = MlflowClient(tracking_uri)

    assert study.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]
    assert_one_run_per_trial(study, client, n_trials=3, workers=1)
    for trial in study.trials:
        child = client.get_run(trial.user_attrs[names.TRIAL_RUN_ID])
        assert trial.values == [
            child.data.metrics["best_val_accuracy"],
            child.data.metrics["n_params"],
        ]
        assert len(child.outputs.model_outputs) == 1  # store_models: true
    front = {trial.number for trial in study.best_trials}
    for trial in study.trials:  # on the front exactly when no other trial dominates it
        dominated = any(
            other.values[0] >= trial.values[0]
            and other.values[1] <= trial.values[1]
            and other.values != trial.values
            for other in study.trials
        )
        assert (trial.number in front) != dominated

    parent_run_id = study.user_attrs[PARENT_RUN_ATTR]
    parent = client.get_run(parent_run_id)
    assert parent.data.metrics["pareto_front_size"] == len(front)
    artifacts = {a.path for a in client.list_artifacts(parent_run_id, "pareto")}
    assert {"pareto/front.json", "pareto/front.md", "pareto/front.png"} <= artifacts
    assert "pareto/sweep.html" in artifacts
    table = mlflow.load_table("pareto/front.json", run_ids=[parent_run_id], extra_columns=[])
    assert set(table["trial"]) == front
    assert not (CONF_DIR / "experiment" / f"{spec.name}_best.yaml").exists(), "no single best"


def test_nan_losses_fail_their_trials_with_the_reason_and_the_sweep_goes_on(
    smoke_file, tracking_uri, monkeypatch
):
    monkeypatch.setattr(
        SentimentTask, "loss", staticmethod(lambda y, p: keras.ops.mean(p) * math.nan)
    )
    spec = load_sweep(smoke_file(n_trials=2, pruner="none"), [f"tracking.uri={tracking_uri}"])
    study = sweep_and_report(spec)
    client = MlflowClient(tracking_uri)

    trials = study.get_trials()
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.FAIL]
    for trial in trials:
        assert trial.user_attrs["failure"].startswith("loss became nan at epoch 1")
        child = client.get_run(trial.user_attrs[names.TRIAL_RUN_ID])
        assert child.info.status == "FAILED"
        assert child.data.tags[names.FAILURE].startswith("NonFiniteLossError: loss became nan")
    parent = client.get_run(study.user_attrs[PARENT_RUN_ATTR])
    assert parent.data.metrics["trials_fail"] == 2
    assert "best_val_accuracy" not in parent.data.metrics


def test_on_sqlite_one_worker_at_a_time_fails_dead_trials(smoke_file):
    """Two workers failing the same dead trial would both queue a retry of it: on SQLite
    the check is under a file lock that a second worker waits for."""
    spec = load_sweep(smoke_file())
    lock_file = Path(spec.storage.removeprefix("sqlite:///") + ".stale-check.lock")
    with stale_check_lock(spec), lock_file.open("a") as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with lock_file.open("a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released once the check is done
        fcntl.flock(other, fcntl.LOCK_UN)


def test_on_sqlite_a_waiting_trial_is_claimed_by_one_worker_only(smoke_file):
    """A retry waits for the first worker free; two that ask at once must not both train it
    (without the claim's lock, SQLite let both win in 9 of 10 tries)."""
    spec = load_sweep(smoke_file())
    for _ in range(5):
        study = optuna.create_study(storage=storage_for(spec), study_name=str(uuid.uuid4()))
        study.enqueue_trial({"x": 1.0})
        trial_id = study.get_trials()[0]._trial_id
        workers = [storage_for(spec) for _ in range(2)]
        for storage in workers:
            storage.get_trial(trial_id)  # connected before the race starts
        together, claims = threading.Barrier(len(workers)), []

        def claim(storage):
            together.wait()
            claims.append(storage.set_trial_state_values(trial_id, TrialState.RUNNING))

        threads = [threading.Thread(target=claim, args=(storage,)) for storage in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(claims) == [False, True]


RATES = [3.0e-4, 1.0e-3, 3.0e-3, 1.0e-2]


class RateObjective:
    """A trial scored by its learning rate alone, in a few milliseconds: what the sampler
    chose, without training. A rate in `interrupt` stops its trial as Ctrl-C does, once."""

    interrupt: set[float] = set()

    def __init__(self, sweep, parent_run_id: str) -> None:
        self.sweep = sweep

    def __call__(self, trial: optuna.Trial) -> float:
        (rate,) = [suggest(trial, param) for param in self.sweep.space]
        time.sleep(0.05)  # two workers' trials overlap
        if rate in self.interrupt:
            self.interrupt.discard(rate)
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            raise KeyboardInterrupt
        return rate


@pytest.fixture
def grid_sweep(smoke_file, monkeypatch):
    """A grid of the 4 rates, 4 trials, its workers' objective RateObjective."""
    monkeypatch.setattr(sweeps, "Objective", RateObjective)
    spec = load_sweep(
        smoke_file(
            space={"optimizer.learning_rate": RATES}, sampler="grid", pruner="none", seed=100
        )
    )
    open_study(spec).set_user_attr(PARENT_RUN_ATTR, "unused")
    return spec


def rates_tried(spec) -> list[float]:
    trials = open_study(spec).get_trials(states=(TrialState.COMPLETE,))
    return sorted(trial.params["optimizer.learning_rate"] for trial in trials)


def test_two_workers_of_a_grid_sweep_try_every_point_once(grid_sweep):
    """Optuna shuffles the grid by the sampler's seed and gives trial k the k-th point: with
    a seed per worker, two workers taking turns on 4 rates tried 2 of them twice each (a
    tuned grid's studies did, at this seed, on 2026-12-05)."""
    workers = [open_study(grid_sweep, number) for number in (0, 1)]  # one sampler each
    objective = RateObjective(grid_sweep, "unused")
    for turn in range(4):
        workers[turn % 2].optimize(objective, n_trials=1)
    assert rates_tried(grid_sweep) == RATES


def test_a_resumed_grid_sweep_runs_the_interrupted_point_not_a_repeat(grid_sweep):
    RateObjective.interrupt = {1.0e-3}
    with pytest.raises(KeyboardInterrupt):
        work(grid_sweep)
    study = open_study(grid_sweep)
    (stopped,) = [t for t in study.get_trials() if t.user_attrs.get(INTERRUPTED_ATTR)]
    requeue_stopped(grid_sweep, study)
    requeue_stopped(grid_sweep, study)  # a second resume queues it once only
    work(grid_sweep)
    assert rates_tried(grid_sweep) == RATES
    (rerun,) = [t for t in open_study(grid_sweep).get_trials() if RERUN_OF_ATTR in t.user_attrs]
    assert rerun.user_attrs[RERUN_OF_ATTR] == stopped.number
    assert rerun.params == stopped.params


def test_a_killed_tuning_grid_still_runs_its_dead_trial_on_resume(smoke_file, monkeypatch):
    """A grid killed whole (kill -9) leaves its last trial RUNNING, and counted: a resumed
    tuned grid must still give that entry its workers, not skip it as fully tuned."""
    monkeypatch.setattr(sweeps, "Objective", RateObjective)
    spec = load_sweep(
        smoke_file(
            space={"optimizer.learning_rate": RATES},
            sampler="grid",
            pruner="none",
            heartbeat_seconds=1,
        )
    )
    study = open_study(spec)
    study.set_user_attr(PARENT_RUN_ATTR, "unused")
    study.optimize(RateObjective(spec, "unused"), n_trials=3)
    dead = study.ask()  # its worker dies while training, after one heartbeat
    suggest(dead, spec.space[0])
    storage_for(spec).record_heartbeat(study.get_trials()[-1]._trial_id)
    assert trials_counted(study) == 4  # the budget looks spent
    time.sleep(3.0)  # stale once two beats are missed
    assert has_trials_to_run(spec, open_study(spec))
    work(spec)
    assert rates_tried(spec) == RATES


@pytest.mark.slow
def test_a_killed_worker_is_failed_and_retried_and_resume_loses_nothing(smoke_file, tmp_path):
    """kill -9 during trial 1; the same command, now with 2 workers on SQLite, finishes it."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    path = smoke_file(pruner="none", heartbeat_seconds=1, n_trials=3)
    spec = load_sweep(path)
    process = sweep_command(str(path), f"tracking.uri={uri}", cwd=tmp_path)
    started_runs = 0
    for line in process.stdout:
        started_runs += line.startswith("MLflow run ")
        if started_runs == 2:  # trial 1 is training
            break
    process.send_signal(signal.SIGKILL)
    process.communicate()
    killed_at = time.monotonic()

    study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.RUNNING]
    first_value = study.trials[0].value
    killed_run_id = study.trials[1].user_attrs[names.TRIAL_RUN_ID]
    client = MlflowClient(uri)
    assert client.get_run(killed_run_id).info.status == "RUNNING"

    # Heartbeats stop at the kill; the trial is stale once the grace period (2 beats) passes.
    time.sleep(max(0.0, 3.0 - (time.monotonic() - killed_at)))
    output = finish(sweep_command(str(path), f"tracking.uri={uri}", "--workers", "2", cwd=tmp_path))
    assert "trial 1 FAIL" in output

    study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    trials = study.get_trials()
    assert trials[0].state == TrialState.COMPLETE and trials[0].value == first_value
    assert trials[1].state == TrialState.FAIL
    killed_run = client.get_run(killed_run_id)
    assert killed_run.info.status == "FAILED"
    assert killed_run.data.tags[names.FAILURE] == STALE_REASON
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 1]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE and retries[0].params == trials[1].params
    assert_one_run_per_trial(study, client, n_trials=3, workers=2)
    assert client.get_run(study.user_attrs[PARENT_RUN_ATTR]).info.status == "FINISHED"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(server: subprocess.Popen, url: str) -> None:
    """Poll the tracking server's health page for up to two minutes; fail if it dies."""
    for _ in range(240):
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail("mlflow server did not answer within two minutes")


@pytest.mark.slow
def test_two_slurm_jobs_on_postgresql_log_to_a_tracking_server(
    smoke_file, tmp_path, postgres_database, slurm_cluster
):
    """The scale-out set-up on one node: 2 SLURM jobs (asked for in the sweep file) share a
    study in PostgreSQL and log over HTTP to `mlflow server`."""
    study_storage, mlflow_store = postgres_database(), postgres_database()
    url = f"http://127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            mlflow_store,
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            url.rsplit(":", 1)[1],
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        # Without the GenAI job runner, which rnnlab never uses and which starts 7 processes.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its web workers go down with it
    )
    try:
        wait_until_serving(server, url)
        logs = tmp_path / "slurm-logs"
        slurm = {"jobs": 2, "time_minutes": 10, "cpus_per_task": 1, "logs": str(logs)}
        path = smoke_file(n_trials=4, launcher="slurm", slurm=slurm)
        spec = load_sweep(path)
        process = sweep_command(
            str(path), f"tracking.uri={url}", "--storage", study_storage, cwd=tmp_path
        )
        output = finish(process)
        assert output.count("SLURM job ") == 2, output[-3000:]
        job_logs = sorted(logs.rglob("*_log.out"))
        assert len(job_logs) == 2
        trials = "".join(log.read_text() for log in job_logs)
        assert trials.count("] trial ") >= 4, "the jobs log their trials"

        study = optuna.load_study(study_name=spec.name, storage=study_storage)
        client = MlflowClient(url)
        assert_one_run_per_trial(study, client, n_trials=4, workers=2)
        parent_run_id = study.user_attrs[PARENT_RUN_ATTR]
        assert client.get_run(parent_run_id).info.status == "FINISHED"
        served = {a.path for a in client.list_artifacts(parent_run_id, "plots")}
        assert "plots/sweep.html" in served
        assert any((tmp_path / "artifacts").rglob("sweep.html")), "on the server"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def test_a_tuned_entry_counts_its_diverged_trials_apart_from_its_interrupted_ones(tmp_path):
    """The report's trials column: a trial failed by its own run (a NaN loss at the highest
    rate) spent the budget and is shown; one interrupted from outside reruns and is not."""
    from rnnlab.experiments.tuning import choice

    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="entry", storage=storage)
    rate = {"optimizer.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}

    def add(value: float, state=TrialState.COMPLETE, loss=None, **user_attrs):
        params = {"optimizer.learning_rate": value}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=rate, value=loss, state=state, user_attrs=user_attrs
            )
        )

    for value, loss in ((3e-4, 0.16), (1e-3, 0.04), (3e-3, 0.15)):
        add(value, loss=loss)
    add(1e-2, TrialState.FAIL)  # diverged
    add(1e-2, TrialState.FAIL, **{INTERRUPTED_ATTR: True})  # Ctrl-C: a resume reruns it

    found = choice("entry", storage)
    assert (found.values, found.trials, found.failed) == ({"optimizer.learning_rate": 1e-3}, 3, 1)
    assert found.trials_text == "3 (and 1 failed)"
