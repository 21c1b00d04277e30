"""`rnnlab paper NAME`: every configuration of an experiment's grid, resumably, on many workers.

Each point runs through `training.run`, unless its resolved config already has a FINISHED
run in MLflow: a killed `make paper` continues where it stopped. Workers share the grid
through claims in a database (claims.py): processes on this machine (`--workers N`), the
same command on other machines pointed at one PostgreSQL `--storage` and one MLflow
server, or SLURM jobs (a launcher of launchers.py). No point runs twice; a point whose
worker died is failed in MLflow with the reason and trained again by a live worker, which
waits for the points others hold until the grid is done.

Deciding what is left stays fast at thousands of runs and points: the grid's facts are
cached (`grids.py`), and the store is read with one query (`records/runs.py`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from rnnlab.config import compose_config
from rnnlab.experiments.claims import FAILED, FINISHED, RUNNING, GridClaims, grid_key
from rnnlab.experiments.grids import GridPoint, PointFacts, entry_key, grid_facts
from rnnlab.experiments.launchers import Launcher, LocalLauncher
from rnnlab.experiments.tuning import entry_sweeps, tune_entries, tuned_overrides
from rnnlab.interrupts import raise_if_stopping
from rnnlab.records import names
from rnnlab.records.liveness import fail_dead_runs
from rnnlab.records.runs import finished_runs
from rnnlab.records.store_access import create_store

POLL_SECONDS = 2.0  # how often an idle worker looks at the points others are training
OTHER_STORE_CLAIMS = "sqlite:///mlruns/optuna.db"


def finished_hashes(tracking_uri: str, experiment_name: str) -> set[str]:
    """Config hashes of the experiment's FINISHED runs in the store (a run without one,
    which no grid point can match, is left out)."""
    runs = finished_runs(tracking_uri, experiment_name, tags=(names.CONFIG_HASH,))
    return {run.tags[names.CONFIG_HASH] for run in runs if names.CONFIG_HASH in run.tags}


def default_claims_storage(tracking_uri: str) -> str:
    """Beside a SQLite MLflow store, the sweeps' database in the same folder; otherwise the
    sweeps' default. Workers on several machines pass a shared `--storage`."""
    if tracking_uri.startswith("sqlite:///"):
        return tracking_uri.rsplit("/", 1)[0] + "/optuna.db"
    return OTHER_STORE_CLAIMS


@dataclass(frozen=True)
class GridJob:
    """What every worker of one `rnnlab paper` command needs: picklable for SLURM."""

    name: str
    overrides: list[str] = field(default_factory=list)
    storage: str | None = None  # the claims' database; None: default_claims_storage
    since: float = 0.0  # when the command began: points settled before it are tried again
    # A tuned grid (tuning.py): each entry's chosen values, and the entries whose study
    # chose nothing (every trial failed), whose seeds are not trained.
    tuned: tuple[tuple[str, tuple[str, ...]], ...] = ()
    untuned: tuple[str, ...] = ()

    def points(self) -> list[tuple[GridPoint, PointFacts]]:
        points = grid_facts(self.name, self.overrides, dict(self.tuned))
        return [(point, facts) for point, facts in points if entry_key(point) not in self.untuned]

    def tracking_uri(self) -> str:
        first = grid_facts(self.name, self.overrides)[0][0]
        return compose_config([*first.overrides, *self.overrides]).tracking.uri

    def claims_storage(self) -> str:
        return self.storage or default_claims_storage(self.tracking_uri())

    def claims(self) -> GridClaims:
        return GridClaims(self.claims_storage(), grid_key(self.name, self.tracking_uri()))


def work(job: GridJob, worker: int = 0, threads: int | None = None, label: str = "") -> None:
    """One worker: claim a free point, train it, repeat; then wait for the points other
    workers hold (training one again if its worker dies) until none is left."""
    if threads:
        from rnnlab.threads import configure_threads

        configure_threads(threads)
    points, uri, claims = job.points(), job.tracking_uri(), job.claims()
    waiting_said = False
    while True:
        raise_if_stopping()
        done = finished_hashes(uri, job.name)
        held = claims.claims()
        trained = False
        for number, (point, facts) in enumerate(points, start=1):
            if facts.config_hash in done:
                continue
            taken, death = claims.take(facts.config_hash, job.since, held.get(facts.config_hash))
            name = f"{label}[{number}/{len(points)}] {' '.join(point.axes)}"
            if death:
                # The dead worker's MLflow run is failed with its reason before its point
                # runs again: now, not at most once a heartbeat as a run's start does.
                fail_dead_runs(uri, now=True)
                print(f"{name}: {death}", flush=True)
            raise_if_stopping()  # one that arrived while claiming: the point goes back
            if taken:
                train_point(claims, facts.config_hash, [*point.overrides, *job.overrides], name)
                trained = True
                waiting_said = False
        if trained:
            continue  # look again: points may have been freed meanwhile
        held = claims.claims()
        others = [
            facts.config_hash
            for _, facts in points
            if facts.config_hash not in done
            and facts.config_hash in held
            and held[facts.config_hash].state == RUNNING
        ]
        if not others:
            return
        if not waiting_said:
            print(f"{label}waiting for {len(others)} point(s) other workers train", flush=True)
            waiting_said = True
        time.sleep(POLL_SECONDS)


def train_point(claims: GridClaims, point: str, overrides: list[str], name: str) -> None:
    """Train one point while its claim beats, then settle the claim either way."""
    # Imported only now: TensorFlow takes seconds to load, and a resumed grid with nothing
    # left to train must decide that without it.
    from rnnlab.training.callbacks import NonFiniteLossError
    from rnnlab.training.run import run

    print(f"{name}: training", flush=True)
    with claims.beating(point):
        try:
            run(compose_config(overrides))
        except NonFiniteLossError as error:
            # Recorded as a FAILED run with its reason; the report shows the cell as missing.
            claims.settle(point, FAILED, str(error))
            print(f"{name}: failed: {error}", flush=True)
            return
        except BaseException as error:  # interrupted, or a bug: free the point for a rerun
            claims.settle(point, FAILED, f"{type(error).__name__}: {error}")
            raise
    claims.settle(point, FINISHED)


def run_experiment(
    name: str,
    extra_overrides: Sequence[str] = (),
    workers: int = 1,
    storage: str | None = None,
    launcher: Launcher | None = None,
) -> dict[str, int]:
    """Train every missing point of the grid on `workers` workers of the launcher (processes
    here by default); returns how many this command's workers ran, how many finished before
    and were skipped, how many failed, and how many are left (a worker died with them)."""
    job = GridJob(name, list(extra_overrides), storage, since=time.time())
    launcher = launcher or LocalLauncher({}, f"paper-{name}")
    untuned_points = 0
    sweeps = entry_sweeps(name, job.tracking_uri(), job.claims_storage(), extra_overrides)
    if sweeps:
        create_store(job.tracking_uri())  # once, before workers race to create its tables
        chosen = tune_entries(sweeps, workers, launcher)
        untuned = tuple(key for key, found in chosen.items() if not found.values)
        for key in untuned:
            print(f"{name}: {key}: no tuning trial completed; its seeds are not trained")
        untuned_points = len(job.points()) - len(dataclasses.replace(job, untuned=untuned).points())
        job = dataclasses.replace(job, tuned=tuned_overrides(chosen), untuned=untuned)
    points = job.points()
    # Read without opening MLflow: a store not written yet has nothing finished.
    done = finished_hashes(job.tracking_uri(), name)
    skipped = sum(facts.config_hash in done for _, facts in points)
    print(
        f"{name}: {len(points)} points, {skipped} finished before; "
        f"{len(points) - skipped} to train on {workers} worker(s)",
        flush=True,
    )
    problems = []
    if skipped < len(points):
        create_store(job.tracking_uri())  # once, before workers race to create its tables
        problems = launcher.run(work, (job,), workers)
    for problem in problems:
        print(problem, flush=True)
    counts = count_points(job, points, skipped)
    counts["left"] += untuned_points
    return counts


def count_points(job: GridJob, points, skipped: int) -> dict[str, int]:
    held = job.claims().claims()
    done = finished_hashes(job.tracking_uri(), job.name)
    counts = {"ran": 0, "skipped": skipped, "failed": 0, "left": 0}
    for _, facts in points:
        claim = held.get(facts.config_hash)
        # Only a claim this command touched counts its point as ran or failed here.
        ours = claim if claim is not None and claim.updated >= job.since else None
        if facts.config_hash in done:
            counts["ran"] += ours is not None
        elif ours is not None and ours.state == FAILED:
            counts["failed"] += 1
        else:
            counts["left"] += 1
    return counts
