"""The study's database: where a sweep's workers meet, and how a dead worker's trial is retried.

Workers never talk to each other; they share an Optuna study in a database, with
heartbeats, so a second machine pointed at the same PostgreSQL storage joins the same study
and running the same command again continues it. A worker killed mid-trial stops beating:
the next worker to ask for a trial fails it (in Optuna and in MLflow) and retries its
parameters. SQLite does not lock rows, so the two read-then-write steps where workers race
(failing a dead trial, claiming a waiting one) are serialized by file locks beside it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import optuna
from mlflow import MlflowClient
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from rnnlab.config import ConfigError, compose_config
from rnnlab.experiments import search_algorithms
from rnnlab.experiments.objective import INTERRUPTED_ATTR
from rnnlab.experiments.sweep_file import DEFAULT_STORAGE, Sweep
from rnnlab.locks import exclusive
from rnnlab.records import names
from rnnlab.records.liveness import fail_run
from rnnlab.records.store_access import StoreUnreachableError, check_store

# Heartbeats and retries are "experimental" in Optuna since 2.x; they are what resume relies on.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

STALE_REASON = "its worker stopped sending heartbeats (killed?); retried as a new trial"
RERUN_OF_ATTR = "rerun_of"  # a grid trial queued again for an interrupted one: its number


# The databases Optuna's RDBStorage is tested on; SQLAlchemy names each by its dialect.
STORAGE_DIALECTS = ("sqlite", "postgresql", "mysql")


def check_study_storage(url: str, tracking_uri: str) -> None:
    """A storage URL Optuna can open, checked before any study or run exists: a database
    URL of a known dialect, not the tracking store's database (Optuna's and MLflow's
    migrations both keep an `alembic_version` table: one failed on the other's), then the
    same checks as a tracking store (a SQLite file that is a database and can be written, a
    server that answers). `storage: nonsense` was a 40-line SQLAlchemy traceback after MLflow
    had loaded."""
    from sqlalchemy.exc import ArgumentError

    shown = without_password(url) if "://" in url else repr(url)
    try:
        dialect = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        dialect = ""
    if dialect not in STORAGE_DIALECTS:
        raise ConfigError(
            f"study storage {shown} is no database URL Optuna opens; use sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST/DB"
        )
    if same_database(url, tracking_uri):
        raise ConfigError(
            f"study storage {shown} is the tracking store's database: give the study its "
            f"own (the default is {DEFAULT_STORAGE})"
        )
    try:
        check_store(url)
    except StoreUnreachableError as error:
        raise ConfigError(str(error).replace("tracking store", "study storage", 1)) from None


def same_database(url: str, tracking_uri: str) -> bool:
    """Whether two URLs name one database: a SQLite file by its resolved path, any other
    by its URL without the driver (`postgresql+psycopg://` is `postgresql://`)."""
    if url.startswith("sqlite:///") and tracking_uri.startswith("sqlite:///"):
        paths = [u.removeprefix("sqlite:///") for u in (url, tracking_uri)]
        if {"", ":memory:"} & set(paths):  # each in-memory database is its own
            return False
        return Path(paths[0]).resolve() == Path(paths[1]).resolve()
    try:
        first_url, second_url = make_url(url), make_url(tracking_uri)
    except Exception:  # a tracking URI need not be a database URL (http://, a folder)
        return False
    return first_url.set(drivername=first_url.get_backend_name()) == second_url.set(
        drivername=second_url.get_backend_name()
    )


def storage_for(sweep: Sweep) -> RDBStorage:
    """The study's database, with heartbeats so trials of killed workers are failed and retried.

    Optuna's journal storage has no heartbeat, hence a database even for local workers:
    SQLite by default, PostgreSQL (`postgresql+psycopg://...`) across machines.
    """
    url = sweep.storage
    engine_kwargs: dict[str, object]
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Several workers write to one file: wait for the lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    return ClaimOnceStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=sweep.heartbeat_seconds,
        heartbeat_stale_trial_callback=StaleTrialHandler(sweep),
    )


def open_study(sweep: Sweep, worker: int = 0) -> optuna.Study:
    """Create the study or load it; each worker's sampler gets its own seed so they differ,
    except the grid sampler's, whose seed is its grid's order (`sampler_seed`)."""
    storage = storage_for(sweep)
    try:
        probe = optuna.create_study(
            study_name=sweep.name,
            storage=storage,
            directions=list(sweep.directions),
            load_if_exists=True,
        )
    except ValueError as error:  # an existing study of the same name with other objectives
        raise ConfigError(f"study '{sweep.name}': {error}") from None
    seed = search_algorithms.sampler_seed(
        sweep.sampler, sweep.seed, worker, len(probe.get_trials(deepcopy=False))
    )
    try:
        sampler, pruner = make_sampler(sweep, seed), make_pruner(sweep)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{sweep.source}: bad sampler or pruner options: {error}") from None
    return optuna.load_study(study_name=sweep.name, storage=storage, sampler=sampler, pruner=pruner)


def requeue_stopped(sweep: Sweep, study: optuna.Study) -> None:
    """Queue again the trials a stopped sweep left unfinished; the process that starts the
    workers calls this once, before them.

    A dead worker's trial (its heartbeats stopped: `kill -9`, a lost machine, a killed grid)
    is failed and retried with its params, as the workers' own check would. A trial stopped
    by Ctrl-C spent no budget, so a resume runs one more: other samplers draw it afresh, but
    Optuna's grid sampler counts the stopped trial's point as visited and would repeat a
    random finished point, so a grid's is queued again at its own point."""
    fail_dead_trials(sweep, study)
    if not search_algorithms.is_grid(sweep.sampler):
        return
    trials = study.get_trials(deepcopy=False)
    queued = {trial.user_attrs.get(RERUN_OF_ATTR) for trial in trials}
    for trial in trials:
        if trial.user_attrs.get(INTERRUPTED_ATTR) and trial.number not in queued and trial.params:
            # As Optuna's retry of a dead worker's trial: the same params and grid point
            # (system attrs), so the sampler neither draws nor counts it anew.
            study.add_trial(
                optuna.create_trial(
                    state=TrialState.WAITING,
                    params=trial.params,
                    distributions=trial.distributions,
                    user_attrs={RERUN_OF_ATTR: trial.number},
                    system_attrs=trial.system_attrs,
                )
            )


def has_trials_to_run(sweep: Sweep, study: optuna.Study) -> bool:
    """Whether a resumed study still needs its workers: its budget is not spent, or a trial
    that a stopped run left waits to run again (queued here first)."""
    requeue_stopped(sweep, study)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return bool(waiting) or not budget_spent(sweep, study)


def make_sampler(sweep: Sweep, seed: int) -> optuna.samplers.BaseSampler:
    grid = {param.path: list(param.choices) for param in sweep.space if param.choices}
    return search_algorithms.make_sampler(sweep.sampler, sweep.sampler_options, seed, grid)


def make_pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    return search_algorithms.make_pruner(sweep.pruner, sweep.pruner_options)


@contextlib.contextmanager
def sqlite_file_lock(storage_url: str, purpose: str) -> Iterator[None]:
    """Serialize a read-then-write of the study's rows among workers, on SQLite.

    PostgreSQL locks a row that Optuna reads for update; SQLite does not, so two workers
    can both read a state and both act on it. Workers sharing a SQLite file share its host,
    so a file lock beside it serializes them. Elsewhere this does nothing.
    """
    if not storage_url.startswith("sqlite:///"):
        yield
        return
    with exclusive(Path(f"{storage_url.removeprefix('sqlite:///')}.{purpose}.lock")):
        yield


def stale_check_lock(sweep: Sweep) -> contextlib.AbstractContextManager[None]:
    """One worker at a time fails a dead worker's trial: two could both queue a retry."""
    return sqlite_file_lock(sweep.storage, "stale-check")


def fail_dead_trials(sweep: Sweep, study: optuna.Study) -> None:
    """Fail the trials whose workers stopped sending heartbeats, and queue their retries."""
    with stale_check_lock(sweep):
        optuna.storages.fail_stale_trials(study)


class ClaimOnceStorage(RDBStorage):
    """Optuna's database storage, where a waiting trial (a retry) starts in one worker only.

    A worker claims a waiting trial by reading that it is WAITING and writing RUNNING. On
    SQLite two workers could both read WAITING and both train the trial, each in an MLflow
    run of its own; the claim is therefore made under a file lock.
    """

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state != TrialState.RUNNING:
            return super().set_trial_state_values(trial_id, state, values)
        with sqlite_file_lock(self.url, "claim"):
            return super().set_trial_state_values(trial_id, state, values)


class StaleTrialHandler:
    """Mark a dead worker's MLflow run FAILED, then let Optuna retry the trial's params."""

    def __init__(self, sweep: Sweep) -> None:
        self.tracking_uri = compose_config(sweep.overrides).tracking.uri
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=sweep.retries)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get(names.TRIAL_RUN_ID)
        if run_id:
            fail_run(MlflowClient(self.tracking_uri), run_id, STALE_REASON)
        print(f"trial {trial.number} FAIL: {STALE_REASON}", flush=True)
        self.retry(study, trial)


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials toward the budget: all but those whose worker died (their retry counts
    instead) and those interrupted (Ctrl-C), which a resume runs again: a trial failed by its
    own loss or config spent its budget; one stopped from outside did not, and every cell of
    a tuned grid must get the same budget."""
    trials = study.get_trials(deepcopy=False)
    retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) for trial in trials}
    return [
        trial
        for trial in trials
        if trial.number not in retried and not trial.user_attrs.get(INTERRUPTED_ATTR)
    ]


def trials_counted(study: optuna.Study) -> int:
    return len(counted_trials(study))


def minutes_spent(study: optuna.Study) -> float:
    """The counted trials' summed durations, finished ones only: the compute a study has
    had, the same on one worker or many, and across resumes."""
    return (
        sum(
            (trial.datetime_complete - trial.datetime_start).total_seconds()
            for trial in counted_trials(study)
            if trial.datetime_start is not None and trial.datetime_complete is not None
        )
        / 60
    )


def budget_spent(sweep: Sweep, study: optuna.Study) -> bool:
    """Whether the study has its n_trials, or its budget_minutes of trials: no new trial
    starts then (one running on another worker still finishes)."""
    if sweep.n_trials is not None and trials_counted(study) >= sweep.n_trials:
        return True
    return sweep.budget_minutes is not None and minutes_spent(study) >= sweep.budget_minutes


def without_password(url: str) -> str:
    """The storage URL fit to print and tag: a PostgreSQL password becomes ***."""
    return make_url(url).render_as_string(hide_password=True)
