"""`rnnlab sweep`'s engine: the parent run, and each worker's loop of trials.

The sweep is one MLflow parent run; every trial is a child run made by the same code as
`rnnlab train` (objective.py). Workers are separate processes, here or SLURM jobs
(launchers.py), that share the study's database (study_storage.py): the same command run
again, or on a second machine, joins the same study and continues it. The command line and
the end-of-sweep report are the CLI's; this module takes plain arguments.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import mlflow
import optuna
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial, TrialState

from rnnlab.config import ConfigError, compose_config
from rnnlab.experiments.launchers import Launcher, LocalLauncher
from rnnlab.experiments.objective import FAILURE_ATTR, Objective
from rnnlab.experiments.study_storage import (
    budget_spent,
    fail_dead_trials,
    open_study,
    requeue_stopped,
    without_password,
)
from rnnlab.experiments.sweep_file import Sweep
from rnnlab.interrupts import raise_if_stopping
from rnnlab.records import names
from rnnlab.records.tracking import git_state, use_store
from rnnlab.threads import configure_threads

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attribute shared by every worker


def work(sweep: Sweep, worker: int = 0, threads: int | None = None, label: str = "") -> None:
    """Run trials until the study has its n_trials or budget_minutes, or this worker's
    timeout passes: one worker's loop.

    `threads`, when several workers share this machine, is this one's share of the cores.
    """
    if threads:
        configure_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from rnnlab.training.callbacks import NonFiniteLossError  # TensorFlow: in the worker only

    started = time.monotonic()
    study = open_study(sweep, worker)
    objective = Objective(sweep, study.user_attrs[PARENT_RUN_ATTR])
    progress = ProgressLine(started, label)
    while True:
        raise_if_stopping()
        fail_dead_trials(sweep, study)  # before counting: a dead trial is retried
        # A waiting trial (the retry of a dead one) is already counted, and must still run.
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if budget_spent(sweep, study) and not waiting:
            break
        if sweep.timeout is not None and time.monotonic() - started >= sweep.timeout:
            break
        # The grid sampler counts a failed trial's point as visited: its retry still waits.
        if (
            isinstance(study.sampler, optuna.samplers.GridSampler)
            and study.sampler.is_exhausted(study)
            and not waiting
        ):
            break
        study.optimize(
            objective, n_trials=1, catch=(NonFiniteLossError, ConfigError), callbacks=[progress]
        )


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
        reason = trial.user_attrs.get(FAILURE_ATTR, "")
        print(
            f"{self.label}trial {trial.number} {trial.state.name}  value {value}  "
            f"best {best}  elapsed {elapsed}" + (f"  ({reason})" if reason else ""),
            flush=True,
        )


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
    if experiment is None:  # use_store has just created it: only someone deleting it gets here
        raise ConfigError(f"MLflow experiment '{cfg.tracking.experiment}' vanished from the store")
    # The children carry the TensorFlow versions; the coordinator never imports TensorFlow.
    tags = {
        **git_state(),
        names.SWEEP: sweep.name,
        names.OPTUNA_STORAGE: without_password(sweep.storage),
    }
    run = client.create_run(experiment.experiment_id, run_name=f"sweep-{sweep.name}", tags=tags)
    client.log_artifact(run.info.run_id, sweep.source)
    study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
    return run.info.run_id


def sweep(
    sweep: Sweep,
    workers: int = 1,
    launcher: Launcher | None = None,
    report: Callable[[optuna.Study, MlflowClient, str], object] | None = None,
) -> optuna.Study:
    """Run (or resume) the sweep on `workers` workers of the launcher (processes here by
    default), then `report(study, client, parent_run_id)` before the parent run ends.

    The report is the caller's (the CLI passes reports.sweep_report's): experiments do not
    reach up to the reports that read them. A report that raises fails the parent run.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(sweep)
    requeue_stopped(sweep, study)
    parent_run_id = open_parent_run(sweep, study)
    client = MlflowClient()
    done = len(study.get_trials(deepcopy=False))
    print(
        f"sweep '{sweep.name}' in {without_password(sweep.storage)}: {done} trial(s) so far, "
        f"{workers} worker(s); MLflow parent run {parent_run_id}",
        flush=True,
    )
    launcher = launcher or LocalLauncher({}, f"sweep-{sweep.name}")
    status = RunStatus.FAILED
    try:
        problems = launcher.run(work, (sweep,), workers)
        if report is not None:
            report(study, client, parent_run_id)
        if problems:
            client.set_tag(parent_run_id, names.FAILURE, "; ".join(problems))
            print("\n".join(problems) + "\nrerun the same command to finish the sweep", flush=True)
        else:
            status = RunStatus.FINISHED
    except KeyboardInterrupt:
        status = RunStatus.KILLED
        raise
    finally:
        client.set_terminated(parent_run_id, RunStatus.to_string(status))
    return study
