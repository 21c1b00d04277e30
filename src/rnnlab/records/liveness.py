"""No run stays RUNNING after its process died: who owns a run, and finding the dead ones.

A process killed with SIGKILL, by the out-of-memory killer or with its machine cannot end
its MLflow run. So every run records its owner (host, pid and the process's start time,
which tells a reused pid apart) and, from a background thread, a heartbeat. Every rnnlab
command that opens a store first fails the RUNNING runs whose owner is gone: on this host
when the process no longer exists, elsewhere when the heartbeat stopped.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import psutil
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException

from rnnlab.records import names

# How often an owner beats: names.HEARTBEAT holds the seconds since the epoch of its last beat.
HEARTBEAT_SECONDS = 60.0
MISSED_BEATS = 3  # a run elsewhere is dead after this many heartbeats are missed


def owner_tags() -> dict[str, str]:
    """Who runs this process: host, pid and the process's start time (pids are reused)."""
    return {
        names.HOST: socket.gethostname(),
        names.PID: str(os.getpid()),
        names.PROCESS_STARTED: f"{psutil.Process().create_time():.2f}",
    }


def owner_is_alive(run: Run, now: float) -> bool | None:
    """True or False where the tags tell; None for runs that predate owner tags."""
    tags = run.data.tags
    if names.HOST not in tags:
        return None
    # Before its first beat a run counts as beating at its start.
    last_beat = max(float(tags.get(names.HEARTBEAT, 0)), run.info.start_time / 1000)
    return process_is_alive(
        tags[names.HOST], tags[names.PID], tags[names.PROCESS_STARTED], last_beat, now
    )


def process_is_alive(host: str, pid: str, started: str, last_beat: float, now: float) -> bool:
    """On this host, whether the process still exists (the same one: pids are reused);
    elsewhere, whether it beat within the last MISSED_BEATS heartbeats."""
    if host == socket.gethostname():
        try:
            process = psutil.Process(int(pid))
            # A killed child its parent has not waited for yet is a zombie: dead all the same.
            same = f"{process.create_time():.2f}" == started
            return same and process.status() != psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, ValueError):
            return False
        except psutil.AccessDenied:  # someone else's live process
            return True
    return now - last_beat < MISSED_BEATS * HEARTBEAT_SECONDS


def death_reason(host: str, pid: str) -> str:
    if host == socket.gethostname():
        return f"its process (pid {pid} on {host}) died without finishing: killed, or out of memory"
    return (
        f"its process (pid {pid} on {host}) sent no heartbeat for "
        f"{MISSED_BEATS * HEARTBEAT_SECONDS:.0f} s: killed, or its machine went down"
    )


_LAST_CHECK: dict[str, float] = {}  # store URI -> when this process last looked


def fail_dead_runs(uri: str, *, now: bool = False) -> list[str]:
    """Mark FAILED, with the reason, every RUNNING run of the store whose process is gone;
    their ids.

    Every run's start calls this, and a sweep worker or a paper grid starts many runs: a
    death can only be told apart from a missed beat once a heartbeat anyway, and the query
    costs each run, so by default a store is looked at once per heartbeat interval in this
    process. `now` looks regardless: a grid worker that has just seen a point's claim die
    fails that run before it trains the point again.
    """
    started = time.monotonic()
    if not now:
        if started - _LAST_CHECK.get(uri, -math.inf) < HEARTBEAT_SECONDS:
            return []
        _LAST_CHECK[uri] = started
    client = MlflowClient(uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    if not experiments:
        return []
    running = client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=10_000)
    seen = time.time()
    failed = []
    for run in running:
        if owner_is_alive(run, seen) is False:
            reason = death_reason(run.data.tags[names.HOST], run.data.tags[names.PID])
            if fail_run(client, run.info.run_id, reason):
                failed.append(run.info.run_id)
    return failed


def fail_run(client: MlflowClient, run_id: str, reason: str) -> bool:
    """Fail a dead owner's run with its reason; False where another process did it first.

    The workers of a resumed grid all look at once and see the same dead runs: two may
    insert the reason tag together, and the store refuses the second. The loser must not
    die of it (a worker did, and its grid went on with one).
    """
    try:
        client.set_tag(run_id, names.FAILURE, reason)
    except MlflowException:
        if names.FAILURE in client.get_run(run_id).data.tags:
            return False
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
    return True


@contextlib.contextmanager
def heartbeat(client: MlflowClient, run_id: str) -> Iterator[None]:
    """Beat every HEARTBEAT_SECONDS while the block runs, so other hosts see the run alive."""
    with beating(lambda: client.set_tag(run_id, names.HEARTBEAT, f"{time.time():.1f}")):
        yield


@contextlib.contextmanager
def beating(beat: Callable[[], object]) -> Iterator[None]:
    """Call `beat` now and every HEARTBEAT_SECONDS from a thread while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            # A store hiccup must not end training: the next beat retries.
            with contextlib.suppress(Exception):
                beat()
            if stop.wait(HEARTBEAT_SECONDS):
                return

    thread = threading.Thread(target=loop, name="rnnlab-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
