"""`tune:` in an experiment: every cell tuned with the same budget before its seeds run.

A grid that trains every cell with one learning rate measures which cell happens to like
that rate: recurrent cells learn only inside narrow, different windows (Okpekpe & Orvieto
2025), and MAD and Zoology tune each architecture's rate before comparing. With a `tune:`
block, `rnnlab paper` does the same, as one protocol:

1. per grid entry (every axis but the seed: a task setting and a cell), an Optuna study over
   `tune.space` with `tune.n_trials` trials, scored on the validation split at each run's
   chosen epoch. It is a sweep like `rnnlab sweep`'s (nested MLflow runs, resumable, the
   same workers and launchers), so a killed grid resumes inside its studies too;
2. the entry's seeds then train at the best trial's values, and those runs are reported.

Equal budget means equal trials per cell (`tune.n_trials`), whatever a cell's speed, or
equal compute (`tune.budget_minutes`): trials start until the entry's finished trials have
run that many minutes in all, so a cell that trains twice as fast gets about twice the
trials. The count is kept in the study, so it is the same on one worker or many and across
resumes; a trial started before the budget ran out still finishes (at most one more per
worker), and the report gives each entry's trials. The trials train with
`tune.seed`, a seed no reported run uses: the reported scores never include the run whose
lucky validation score chose its values (the winner's curse).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from rnnlab.config import CONF_DIR, compose_config
from rnnlab.experiments.claims import grid_key
from rnnlab.experiments.grids import entry_key, experiment_grid
from rnnlab.experiments.sweep_file import Sweep, SweepFileChecker, key_lines

# The keys of a `tune:` block, as a sweep file spells them; `per_task` is the experiment's
# shape: {task: {group: {key: value}}} for a shorter tuning schedule of a costly task.
TUNE_KEYS = (
    "space",
    "n_trials",
    "budget_minutes",
    "sampler",
    "sampler_options",
    "pruner",
    "pruner_options",
    "metric",
    "direction",
    "seed",
    "per_task",
)
SEED = "seed="


def tune_block(name: str, extra_overrides: Sequence[str] = ()) -> dict[str, Any] | None:
    """The experiment's `tune:` block, or None when the experiment (or `tune=null`) has none."""
    cfg = compose_config([f"experiment={name}", *extra_overrides])
    block = cfg.get("tune")
    if block is None:
        return None
    return OmegaConf.to_container(block, resolve=True)  # type: ignore[return-value]


def study_name(name: str, tracking_uri: str, key: str) -> str:
    """One study per entry of one grid in one store (as claims are)."""
    # No `=`: the name is also in each trial's `tracking.run_name=...` override.
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key.replace("=", "-"))
    return f"{name}-tune-{grid_key(name, tracking_uri)[:8]}-{slug}"


def experiment_file(name: str) -> Path:
    return CONF_DIR / "experiment" / f"{name}.yaml"


def tune_lines(name: str) -> dict[tuple[str, ...], int]:
    """Line numbers of the `tune:` block's keys in the experiment file, for its errors."""
    node = yaml.compose(experiment_file(name).read_text())
    for key, value in getattr(node, "value", []):
        if key.value == "tune":
            return {(): key.start_mark.line + 1, **key_lines(value)}
    return {}


def entry_sweeps(
    name: str,
    tracking_uri: str,
    storage: str,
    extra_overrides: Sequence[str] = (),
) -> dict[str, Sweep]:
    """The checked study of every grid entry, by entry key: a mistake in `tune:` fails here,
    in one line naming the experiment file and line, before any trial starts."""
    block = tune_block(name, extra_overrides)
    if block is None:
        return {}
    checker = SweepFileChecker(experiment_file(name), tune_lines(name))
    unknown = [key for key in block if key not in TUNE_KEYS]
    if unknown:
        raise checker.fail((unknown[0],), f"tune: unknown key '{unknown[0]}'; known: {TUNE_KEYS}")
    if not block.get("n_trials") and not block.get("budget_minutes"):
        raise checker.fail(
            ("n_trials",), "tune: n_trials (trials per cell) or budget_minutes is required"
        )
    seed = block.get("seed", 0)
    per_task = block.get("per_task") or {}
    sweeps: dict[str, Sweep] = {}
    for point in experiment_grid(name):
        key = entry_key(point)
        if key in sweeps:
            continue
        task = next((axis.split("=", 1)[1] for axis in point.axes if axis.startswith("task=")), "")
        schedule = [
            f"{group}.{setting}={value}"
            for group, settings in (per_task.get(task) or {}).items()
            for setting, value in settings.items()
        ]
        data = {
            **{k: v for k, v in block.items() if k not in ("per_task", "seed")},
            "study": study_name(name, tracking_uri, key),
            "storage": storage,
            "seed": seed,
            "overrides": [
                *(o for o in point.overrides if not o.startswith(SEED)),
                f"seed={seed}",
                f"experiment_name={name}-tune",  # its trials are not the grid's runs
                *schedule,
            ],
        }
        sweeps[key] = checker.check(data, list(extra_overrides))
    return sweeps


@dataclass(frozen=True)
class Choice:
    """What an entry's study chose: the best trial's values, its score, the trials run."""

    values: dict[str, Any]
    score: float | None
    trials: int  # completed
    failed: int = 0  # failed by their own run (a NaN loss): budget spent, nothing chosen

    @property
    def trials_text(self) -> str:
        """The trials as the report counts them: a cell whose high rate diverged had one
        rate fewer to choose from, and a reader comparing budgets must see it."""
        return f"{self.trials} (and {self.failed} failed)" if self.failed else str(self.trials)

    @property
    def overrides(self) -> tuple[str, ...]:
        return tuple(f"{path}={value}" for path, value in self.values.items())


def choice(study_name: str, storage: str) -> Choice:
    """The study's best so far; no values while no trial has completed."""
    import optuna
    from optuna.trial import TrialState

    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).exists():
        return Choice({}, None, 0)  # reading must not create the database
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # not started
        return Choice({}, None, 0)
    from rnnlab.experiments.study_storage import counted_trials

    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    failed = sum(trial.state == TrialState.FAIL for trial in counted_trials(study))
    if not completed:
        return Choice({}, None, 0, failed)
    best = study.best_trial
    return Choice(dict(best.params), best.value, len(completed), failed)


def tune_entries(sweeps: dict[str, Sweep], workers: int, launcher) -> dict[str, Choice]:
    """Run (or resume) every entry's study to its trial count; returns each entry's choice.

    One set of workers serves all the studies, entry after entry (`work_studies`): a worker
    starts TensorFlow once, and one that finishes its share of a study moves on to the next
    instead of waiting. Each study has its own parent run in MLflow, ended as a sweep's is.
    """
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import RunStatus

    from rnnlab.experiments.study_storage import has_trials_to_run, open_study
    from rnnlab.experiments.sweep import open_parent_run

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pending, parents = [], []
    for key, spec in sweeps.items():
        study = open_study(spec)
        if not has_trials_to_run(spec, study):
            continue
        pending.append(spec)
        parents.append(open_parent_run(spec, study))
    if pending:
        budget = budget_text(pending[0].n_trials, pending[0].budget_minutes)
        print(
            f"tuning {len(pending)} of {len(sweeps)} entries, {budget} each, on {workers} "
            "worker(s)",
            flush=True,
        )
        status = RunStatus.FAILED
        client = MlflowClient()
        try:
            problems = launcher.run(work_studies, (tuple(pending),), workers)
            for problem in problems:
                print(problem, flush=True)
            if not problems:
                status = RunStatus.FINISHED
        except KeyboardInterrupt:
            status = RunStatus.KILLED
            raise
        finally:
            for run_id in parents:
                client.set_terminated(run_id, RunStatus.to_string(status))
    return {key: choice(spec.name, spec.storage) for key, spec in sweeps.items()}


def work_studies(
    sweeps: tuple[Sweep, ...], worker: int = 0, threads: int | None = None, label: str = ""
) -> None:
    """One worker's loop over the studies: its share of each, then the next."""
    from rnnlab.experiments.sweep import work

    for number, spec in enumerate(sweeps):
        work(spec, worker, threads if number == 0 else None, label)


def chosen_values(name: str, tracking_uri: str, storage: str) -> dict[str, Choice]:
    """Each entry's choice as its study holds it now, for the report: read, never checked
    or run, so a report of a grid still tuning shows what is chosen so far."""
    keys = dict.fromkeys(entry_key(point) for point in experiment_grid(name))
    return {key: choice(study_name(name, tracking_uri, key), storage) for key in keys}


def tuned_overrides(chosen: dict[str, Choice]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The chosen values as GridJob takes them: hashable, picklable for SLURM."""
    return tuple((key, found.overrides) for key, found in chosen.items() if found.values)


def budget_text(n_trials: int | None, budget_minutes: float | None) -> str:
    """An entry's budget in words: trials, trial minutes, or whichever comes first."""
    parts = [f"{n_trials} trials" if n_trials else ""]
    parts.append(f"{budget_minutes:g} trial minutes" if budget_minutes else "")
    return " or ".join(part for part in parts if part)


def caption(block: dict[str, Any]) -> str:
    """The protocol in a sentence, for the report."""
    space = ", ".join(
        f"{path} in [{spec['low']:g}, {spec['high']:g}]{' (log)' if spec.get('log') else ''}"
        if isinstance(spec, dict) and "low" in spec
        else f"{path} in {spec.get('choices') if isinstance(spec, dict) else spec}"
        for path, spec in block["space"].items()
    )
    shorter = (
        f" Tuned on a shorter schedule: {', '.join(block['per_task'])}."
        if block.get("per_task")
        else ""
    )
    budget = budget_text(block.get("n_trials"), block.get("budget_minutes"))
    if block.get("budget_minutes"):
        budget += " (a faster cell gets more trials; each entry's count is in the table)"
    return (
        f"Every cell tuned with the same budget: {budget} of "
        f"{block.get('sampler', 'tpe')} (pruner {block.get('pruner', 'median')}) over "
        f"{space}, chosen by the validation split with seed {block.get('seed', 0)}, which no "
        f"reported run uses; the reported seeds train at the chosen values.{shorter}"
    )
