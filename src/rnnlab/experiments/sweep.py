"""`rnnlab sweep`: an Optuna study whose trials are ordinary `run(cfg, trial)` calls.

The sweep is one MLflow parent run; every trial is a child run made by the same code as
`rnnlab train`. Workers are separate processes sharing the study's storage, so a second
machine pointed at the same PostgreSQL storage joins the same study, and running the same
command again continues it. A worker killed mid-trial stops sending heartbeats: the next
worker to ask for a trial fails it (in Optuna and MLflow) and retries its parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import mlflow
import optuna
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from rnnlab.config import CONF_DIR, ConfigError, compose_config
from rnnlab.experiments import search_algorithms
from rnnlab.experiments.launchers import SlurmLauncher, add_launcher_arguments, slurm_options_from
from rnnlab.experiments.sweep_file import Param, Sweep
from rnnlab.experiments.workers import run_workers
from rnnlab.locks import exclusive
from rnnlab.records.tracking import git_state, use_store
from rnnlab.threads import configure_threads

# Heartbeats and retries are "experimental" in Optuna since 2.x; they are what resume relies on.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attribute shared by every worker
STALE_REASON = "its worker stopped sending heartbeats (killed?); retried as a new trial"


def storage_for(sweep: Sweep) -> RDBStorage:
    """The study's database, with heartbeats so trials of killed workers are failed and retried.

    Optuna's journal storage has no heartbeat, hence a database even for local workers:
    SQLite by default, PostgreSQL (`postgresql+psycopg://...`) across machines.
    """
    url = sweep.storage
    engine_kwargs = {}
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
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            client = MlflowClient(self.tracking_uri)
            client.set_tag(run_id, "rnnlab.failure", STALE_REASON)
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        print(f"trial {trial.number} FAIL: {STALE_REASON}", flush=True)
        self.retry(study, trial)


def make_sampler(sweep: Sweep, seed: int) -> optuna.samplers.BaseSampler:
    grid = {param.path: list(param.choices) for param in sweep.space if param.choices}
    return search_algorithms.make_sampler(sweep.sampler, sweep.sampler_options, seed, grid)


def make_pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    return search_algorithms.make_pruner(sweep.pruner, sweep.pruner_options)


def open_study(sweep: Sweep, worker: int = 0) -> optuna.Study:
    """Create the study or load it; each worker's sampler gets its own seed so they differ."""
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
    # On resume, start the sampler's random stream where the finished trials left it.
    seed = sweep.seed + 1000 * worker + len(probe.get_trials(deepcopy=False))
    try:
        sampler, pruner = make_sampler(sweep, seed), make_pruner(sweep)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{sweep.source}: bad sampler or pruner options: {error}") from None
    return optuna.load_study(study_name=sweep.name, storage=storage, sampler=sampler, pruner=pruner)


def trials_counted(study: optuna.Study) -> int:
    """Trials toward n_trials: all but those whose worker died (their retry counts instead)."""
    trials = study.get_trials(deepcopy=False)
    retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) for trial in trials}
    return sum(1 for trial in trials if trial.number not in retried)


def suggest(trial: optuna.Trial, param: Param):
    if param.kind == "categorical":
        return trial.suggest_categorical(param.path, list(param.choices))
    if param.kind == "int":
        step = param.step or 1
        return trial.suggest_int(param.path, param.low, param.high, log=param.log, step=step)
    return trial.suggest_float(param.path, param.low, param.high, log=param.log, step=param.step)


def trial_overrides(sweep: Sweep, trial: optuna.Trial, parent_run_id: str) -> list[str]:
    sampled = [f"{param.path}={suggest(trial, param)}" for param in sweep.space]
    return [
        "probe.plots=false",  # a trial's curves are in its metrics and JSON; a file may say true
        # A trial is short and one of many: a model each would fill the store (store_models
        # turns them on), and its system metrics would be a sample or two.
        f"tracking.log_model={str(sweep.store_models).lower()}",
        "tracking.system_metrics=false",
        *sweep.overrides,
        *sampled,
        f"tracking.parent_run_id={parent_run_id}",
        f"tracking.run_name={sweep.name}-trial{trial.number}",
    ]


class Objective:
    """One trial: compose the config with the sampled values and train it like `rnnlab train`."""

    def __init__(self, sweep: Sweep, parent_run_id: str) -> None:
        self.sweep = sweep
        self.parent_run_id = parent_run_id

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        from rnnlab.training.callbacks import NonFiniteLossError
        from rnnlab.training.run import run

        cfg = compose_config(trial_overrides(self.sweep, trial, self.parent_run_id))
        try:
            metrics = run(cfg, trial=trial).metrics
        except (NonFiniteLossError, ConfigError) as error:
            trial.set_user_attr("failure", str(error).splitlines()[0])
            raise
        values = tuple(metrics[objective] for objective in self.sweep.objectives)
        return values if self.sweep.multi_objective else values[0]


class ProgressLine:
    """Print a line per finished trial: number, state, value, best so far, elapsed time."""

    def __init__(self, started: float, label: str = "") -> None:
        self.started = started
        self.label = label

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        values = trial.values or ([trial.value] if trial.value is not None else [])
        shape = ".4f" if len(values) == 1 else ".4g"  # costs such as n_params are large
        value = ", ".join(format(v, shape) for v in values) or "-"
        if len(study.directions) > 1:
            best = f"Pareto front of {len(study.best_trials)}"
        else:
            try:
                best = f"{study.best_value:.4f} (trial {study.best_trial.number})"
            except ValueError:
                best = "-"
        elapsed = timedelta(seconds=round(time.monotonic() - self.started))
        reason = trial.user_attrs.get("failure", "")
        print(
            f"{self.label}trial {trial.number} {trial.state.name}  value {value}  "
            f"best {best}  elapsed {elapsed}" + (f"  ({reason})" if reason else ""),
            flush=True,
        )


def work(sweep: Sweep, worker: int = 0, threads: int | None = None, label: str = "") -> None:
    """Run trials until the study has n_trials or the timeout passes: one worker's loop.

    `threads`, when several workers share this machine, is this one's share of the cores.
    """
    if threads:
        configure_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from rnnlab.training.callbacks import NonFiniteLossError

    started = time.monotonic()
    study = open_study(sweep, worker)
    objective = Objective(sweep, study.user_attrs[PARENT_RUN_ATTR])
    progress = ProgressLine(started, label)
    while True:
        with stale_check_lock(sweep):  # before counting: a dead trial is retried
            optuna.storages.fail_stale_trials(study)
        # A waiting trial (the retry of a dead one) is already counted, and must still run.
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if sweep.n_trials is not None and trials_counted(study) >= sweep.n_trials and not waiting:
            break
        if sweep.timeout is not None and time.monotonic() - started >= sweep.timeout:
            break
        if isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(
            study
        ):
            break
        study.optimize(
            objective, n_trials=1, catch=(NonFiniteLossError, ConfigError), callbacks=[progress]
        )


def without_password(url: str) -> str:
    """The storage URL fit to print and tag: a PostgreSQL password becomes ***."""
    return make_url(url).render_as_string(hide_password=True)


def is_live_run(client: MlflowClient, run_id: str) -> bool:
    """False when the run is in another store (tracking.uri changed) or was deleted."""
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def open_parent_run(sweep: Sweep, study: optuna.Study) -> str:
    """The sweep's MLflow run, created once per study and reopened when the sweep resumes."""
    cfg = compose_config(sweep.overrides)
    use_store(cfg.tracking.uri, cfg.tracking.experiment)
    client = MlflowClient()
    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id and is_live_run(client, run_id):
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        return run_id
    experiment = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    # The children carry the TensorFlow versions; the coordinator never imports TensorFlow.
    tags = {
        **git_state(),
        "rnnlab.sweep": sweep.name,
        "optuna.storage": without_password(sweep.storage),
    }
    run = client.create_run(experiment.experiment_id, run_name=f"sweep-{sweep.name}", tags=tags)
    client.log_artifact(run.info.run_id, sweep.source)
    study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
    return run.info.run_id


def sweep(
    sweep: Sweep, workers: int = 1, best_folder: Path | None = None, launcher=None
) -> optuna.Study:
    """Run (or resume) the sweep on `workers` workers (processes here, or the launcher's
    jobs), then write its report to the parent run.

    The best trial becomes `<best_folder>/<study>_best.yaml`, by default in conf/experiment/.
    """
    from rnnlab.reports.sweep_report import report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(sweep)
    parent_run_id = open_parent_run(sweep, study)
    client = MlflowClient()
    done = len(study.get_trials(deepcopy=False))
    print(
        f"sweep '{sweep.name}' in {without_password(sweep.storage)}: {done} trial(s) so far, "
        f"{workers} worker(s); MLflow parent run {parent_run_id}",
        flush=True,
    )
    status = RunStatus.FAILED
    try:
        if launcher is not None:
            problems = launcher.run(work, (sweep,), workers)
        elif workers == 1:
            work(sweep)
            problems = []
        else:
            problems = run_workers(work, (sweep,), workers)
        report(study, sweep, client, parent_run_id, best_folder or CONF_DIR / "experiment")
        if problems:
            client.set_tag(parent_run_id, "rnnlab.failure", "; ".join(problems))
            print("\n".join(problems) + "\nrerun the same command to finish the sweep", flush=True)
        else:
            status = RunStatus.FINISHED
    except KeyboardInterrupt:
        status = RunStatus.KILLED
        raise
    finally:
        client.set_terminated(parent_run_id, RunStatus.to_string(status))
    return study


def main(arguments: list[str]) -> None:
    """`rnnlab sweep <file> [overrides] [--workers N] [--storage URL]`."""
    from rnnlab.experiments.sweep_file import load_sweep

    parser = argparse.ArgumentParser(prog="rnnlab sweep", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="sweeps/<name>.yaml, or just <name>")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every trial")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    parser.add_argument("--storage", help="Optuna storage URL; replaces the sweep file's")
    add_launcher_arguments(parser)
    options = parser.parse_intermixed_args(arguments)
    if options.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {options.workers}")
    spec = load_sweep(options.file, options.overrides)
    if options.storage:
        spec = dataclasses.replace(spec, storage=options.storage)
    launcher = None
    if (options.launcher or spec.launcher) == "slurm":
        launcher = SlurmLauncher(slurm_options_from(options, spec.slurm), f"sweep-{spec.name}")
    study = sweep(spec, options.workers, launcher=launcher)
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        sys.exit("rnnlab: no trial completed; see the failures above")
