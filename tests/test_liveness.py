"""No run is left RUNNING after its process died: a real SIGKILL, and runs on other hosts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from rnnlab.records import liveness, names
from rnnlab.training.run import run

# Long enough to be killed mid-run: thousands of tiny epochs.
ENDLESS_TRAINING = [
    "task=adding",
    "task.length=10",
    "task.max_examples=64",
    "trainer.epochs=100000",
    "trainer.early_stopping_patience=null",
    "trainer.verbose=0",
    "probe.enabled=false",
    "cell.units=4",
]


def running_run(client: MlflowClient, process: subprocess.Popen, timeout: float = 180):
    """The RUNNING run the process opened, once it has one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-2000:]
        experiment = client.get_experiment_by_name("adding")
        if experiment:
            runs = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
            if runs and names.SEED in runs[0].data.tags:  # past its set-up
                return runs[0]
        time.sleep(0.5)
    raise AssertionError("the training process opened no run")


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_run_killed_with_sigkill_is_failed_by_the_next_train_on_the_store(
    store, tmp_path, compose, request
):
    if store == "sqlite":
        uri = f"sqlite:///{tmp_path}/mlflow.db"
    else:
        uri = request.getfixturevalue("postgres_database")()
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnlab.cli", "train", *ENDLESS_TRAINING, f"tracking.uri={uri}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = MlflowClient(uri)
    try:
        killed = running_run(client, process)
        time.sleep(2)  # into training
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert client.get_run(killed.info.run_id).info.status == "RUNNING"  # nobody ended it
    assert killed.data.tags[names.PID] == str(process.pid)

    run(compose("task=adding", "task.length=10", "trainer.epochs=1", f"tracking.uri={uri}"))

    after = client.get_run(killed.info.run_id)
    assert after.info.status == "FAILED"
    reason = after.data.tags[names.FAILURE]
    assert f"its process (pid {process.pid} on " in reason and "died" in reason
    assert not client.search_runs([killed.info.experiment_id], "attributes.status = 'RUNNING'"), (
        "nothing is left RUNNING"
    )


def owned_run(client: MlflowClient, experiment_id: str, started: float | None = None, **tags):
    start_time = int(1000 * (started or time.time()))
    return client.create_run(experiment_id, start_time=start_time, tags=tags).info.run_id


def test_runs_elsewhere_fail_when_their_heartbeat_stops_and_live_ones_stay(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("liveness")
    now = time.time()
    stale_beat = f"{now - liveness.MISSED_BEATS * liveness.HEARTBEAT_SECONDS - 5:.0f}"
    elsewhere = {names.HOST: "another-node", names.PID: "4242", names.PROCESS_STARTED: "1.00"}
    an_hour_ago = now - 3600
    silent = owned_run(
        client, experiment_id, an_hour_ago, **elsewhere, **{names.HEARTBEAT: stale_beat}
    )
    beating = owned_run(
        client, experiment_id, an_hour_ago, **elsewhere, **{names.HEARTBEAT: f"{now:.0f}"}
    )
    just_started = owned_run(client, experiment_id, **elsewhere)  # before its first beat
    here_alive = owned_run(client, experiment_id, **liveness.owner_tags())
    untagged = owned_run(client, experiment_id)  # made before owners were recorded

    assert liveness.fail_dead_runs(uri, now=True) == [silent]

    assert client.get_run(silent).info.status == "FAILED"
    assert "sent no heartbeat" in client.get_run(silent).data.tags[names.FAILURE]
    for run_id in (beating, just_started, here_alive, untagged):
        assert client.get_run(run_id).info.status == "RUNNING"


def test_a_reused_pid_does_not_keep_a_dead_run_alive(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("liveness")
    mine = liveness.owner_tags()
    reused = owned_run(client, experiment_id, **{**mine, names.PROCESS_STARTED: "12.00"})
    assert liveness.fail_dead_runs(uri, now=True) == [reused]
    assert os.getpid() == int(client.get_run(reused).data.tags[names.PID])


def test_the_heartbeat_tags_the_run_while_it_lives(tmp_path, monkeypatch):
    monkeypatch.setattr(liveness, "HEARTBEAT_SECONDS", 0.05)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = owned_run(client, client.create_experiment("liveness"))
    with liveness.heartbeat(client, run_id):
        time.sleep(0.3)
        first = float(client.get_run(run_id).data.tags[names.HEARTBEAT])
        time.sleep(1.2)
        second = float(client.get_run(run_id).data.tags[names.HEARTBEAT])
    assert second > first


def test_a_process_looks_for_dead_runs_once_a_heartbeat_per_store_unless_told_now(
    tmp_path, monkeypatch
):
    """Every run's start looks (at most once a beat); a grid worker that saw a claim die
    looks now, and its look does not delay the next run's."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("liveness")
    dead = {**liveness.owner_tags(), names.PROCESS_STARTED: "12.00"}  # this pid, another process

    first = owned_run(client, experiment_id, **dead)
    assert liveness.fail_dead_runs(uri) == [first]
    second = owned_run(client, experiment_id, **dead)
    assert liveness.fail_dead_runs(uri) == []  # looked a moment ago
    assert liveness.fail_dead_runs(uri, now=True) == [second]
    third = owned_run(client, experiment_id, **dead)
    assert liveness.fail_dead_runs(uri) == []  # still a moment after the beat's look
    monkeypatch.setattr(liveness, "HEARTBEAT_SECONDS", 0.0)
    assert liveness.fail_dead_runs(uri) == [third]


def test_a_dead_run_two_workers_fail_at_once_is_failed_once_and_neither_dies(tmp_path, monkeypatch):
    """The workers of a resumed grid look together: the one whose reason tag the store
    refuses, because the other inserted it first, goes on (one died of it and its grid ran
    on with a single worker)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    dead = {**liveness.owner_tags(), names.PROCESS_STARTED: "12.00"}
    run_id = owned_run(client, client.create_experiment("liveness"), **dead)
    other_worker = MlflowClient(uri)
    set_tag = MlflowClient.set_tag

    def lose_the_race(self, tagged_run_id, key, value, *args, **kwargs):
        if key == names.FAILURE and self is not other_worker:
            set_tag(other_worker, tagged_run_id, key, "failed by the other worker")
            raise MlflowException("UNIQUE constraint failed: tags.key, tags.run_uuid")
        return set_tag(self, tagged_run_id, key, value, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_tag", lose_the_race)
    assert liveness.fail_dead_runs(uri, now=True) == []  # the other worker failed it
    assert client.get_run(run_id).data.tags[names.FAILURE] == "failed by the other worker"


def test_a_store_error_that_is_not_the_race_still_reaches_the_user(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    dead = {**liveness.owner_tags(), names.PROCESS_STARTED: "12.00"}
    owned_run(client, client.create_experiment("liveness"), **dead)

    def refuse(*args, **kwargs):
        raise MlflowException("the store is read-only")

    monkeypatch.setattr(MlflowClient, "set_tag", refuse)
    with pytest.raises(MlflowException, match="read-only"):
        liveness.fail_dead_runs(uri, now=True)
