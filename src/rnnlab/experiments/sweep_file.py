"""Read and check a sweep file (`sweeps/<name>.yaml`) before any trial starts.

A mistake in a search space would otherwise surface hours into an overnight sweep, so every
key, path and range is checked here against the real composed config, and each error is one
line naming the file and the line: `sweeps/x.yaml:12: unknown parameter path 'cell.unit'`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeGuard

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from rnnlab.config import (
    CONF_DIR,
    PROJECT_ROOT,
    TASK_KERAS_METRICS,
    ConfigError,
    compose_config,
    compose_many,
    group_choices,
)
from rnnlab.experiments.launchers import LAUNCHERS, SlurmOptions
from rnnlab.experiments.search_algorithms import (
    PRUNERS,
    SAMPLERS,
    make_pruner,
    make_sampler,
    missing_requirement,
    option_problem,
)

# What a run logs once, after training, that a multi-objective sweep may trade against its
# validation score, and which way is better.
COST_METRICS = {
    "n_params": "minimize",
    "n_params_recurrent": "minimize",
    "epoch_seconds": "minimize",
    "samples_per_second": "maximize",
}
DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"  # beside MLflow's store, in its own file
KEYS = {
    "study": "study name; defaults to the file's name",
    "storage": "Optuna storage URL",
    "overrides": "Hydra overrides every trial starts from",
    "space": "the search space",
    "sampler": "one of " + ", ".join(SAMPLERS),
    "sampler_options": "keyword arguments of the Optuna sampler",
    "pruner": "one of " + ", ".join(PRUNERS),
    "pruner_options": "keyword arguments of the Optuna pruner",
    "metric": "a validation score the task logs (the sweep tunes val_<metric>), or a list: "
    "that, then costs (" + ", ".join(COST_METRICS) + ") for a multi-objective sweep",
    "direction": "maximize or minimize, or a list with one per metric",
    "n_trials": "trials to finish, counted across all workers and resumes",
    "timeout": "seconds after which no new trial starts",
    "budget_minutes": "trial minutes (summed, across workers and resumes) after which no new "
    "trial starts: equal compute for configs of different speeds",
    "seed": "the sampler's seed",
    "heartbeat_seconds": "how often a running trial proves it is alive",
    "retries": "how often a trial whose worker died is retried",
    "store_models": "true stores each trial's model with its run (off: a model per trial adds up)",
    "launcher": "where the workers run: " + " or ".join(LAUNCHERS) + " (launchers.py)",
    "slurm": "the SLURM jobs' partition, time_minutes, cpus_per_task, gpus_per_task, jobs, logs",
}
PARAM_KEYS = ("choices", "low", "high", "log", "step")
# Which way an objective is better, spelled as Optuna's create_study takes it.
Direction = Literal["maximize", "minimize"]


def is_direction(value: Any) -> TypeGuard[Direction]:
    return value in ("maximize", "minimize")


class SweepFileError(ConfigError):
    """A mistake in a sweep file, reported as `<file>:<line>: <what is wrong>`."""


@dataclass(frozen=True)
class Param:
    """One searched config path: a list of choices, or an int or float range."""

    path: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def bounds(self) -> tuple[float, float]:
        """A range's low and high, which the checker requires of every range."""
        if self.low is None or self.high is None:
            raise ValueError(f"{self.path}: a parameter with a list of choices has no range")
        return self.low, self.high

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "categorical"
        integers = all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))
        return "int" if integers else "float"


@dataclass(frozen=True)
class Sweep:
    """A checked sweep file plus the command line's overrides: everything a worker needs."""

    name: str
    source: str
    overrides: tuple[str, ...]
    space: tuple[Param, ...]
    metric: str  # the validation score: val_<metric> picks each trial's tested epoch
    direction: Direction
    n_trials: int | None
    timeout: float | None
    budget_minutes: float | None = None
    storage: str = DEFAULT_STORAGE
    sampler: str = "tpe"
    sampler_options: dict[str, Any] = field(default_factory=dict)
    pruner: str = "median"
    pruner_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    heartbeat_seconds: int = 30
    retries: int = 2
    costs: tuple[str, ...] = ()  # further objectives of a multi-objective sweep (COST_METRICS)
    cost_directions: tuple[Direction, ...] = ()
    store_models: bool = False
    launcher: str = "local"
    slurm: dict[str, Any] = field(default_factory=dict)  # launchers.SlurmOptions' fields

    @property
    def objectives(self) -> tuple[str, ...]:
        """Each objective's MLflow metric: the best validation score, then the costs."""
        return (f"best_val_{self.metric}", *self.costs)

    @property
    def directions(self) -> tuple[Direction, ...]:
        return (self.direction, *self.cost_directions)

    @property
    def multi_objective(self) -> bool:
        return bool(self.costs)


def key_lines(node: yaml.Node, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """The 1-based line of every mapping key, by its path: errors can then name the line."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            lines[path] = key_node.start_mark.line + 1
            lines.update(key_lines(value_node, path))
    return lines


def override_key(override: str) -> str:
    """'cell.units=8' -> 'cell.units'; '+experiment=x' -> 'experiment'."""
    try:
        [parsed] = OverridesParser.create().parse_overrides([override])
    except Exception as error:  # Hydra raises several types; all mean a malformed override
        raise ConfigError(f"bad override '{override}': {str(error).splitlines()[0]}") from None
    return parsed.key_or_group


def without_searched(overrides: list[str], space: tuple[Param, ...]) -> list[str]:
    """Drop overrides of searched paths: in a trial the sampled value wins."""
    searched = {param.path for param in space}
    return [override for override in overrides if override_key(override) not in searched]


def sample_values(param: Param) -> list[Any]:
    """The values a check composes: every choice, or both ends of a range."""
    return list(param.choices) if param.choices is not None else [param.low, param.high]


def validation_scores(task) -> list[str]:
    """The names a run of the composed task logs as val_<name> every epoch, and so as
    best_val_<name> (the trial's value) and test_<name>: the loss, the task's Keras metrics
    and whatever stand-in its config names for picking the tested epoch."""
    names = ["loss", *TASK_KERAS_METRICS.get(task.name, ())]
    selection = task.get("validation_metric") or task.metric
    return names if selection in names else [*names, str(selection)]


def load_sweep(path: str | Path, extra_overrides: Sequence[str] = ()) -> Sweep:
    """Parse and check a sweep file; extra_overrides (from the command line) come last."""
    source = Path(path)
    if not source.exists() and (PROJECT_ROOT / "sweeps" / f"{path}.yaml").exists():
        source = PROJECT_ROOT / "sweeps" / f"{path}.yaml"
    try:
        text = source.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read sweep file {path}: {error.strerror}") from None
    try:
        lines = key_lines(yaml.compose(text) or yaml.MappingNode("", []))
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else str(source)
        raise SweepFileError(f"{where}: not valid YAML: {getattr(error, 'problem', error)}")
    return SweepFileChecker(source, lines).check(data, list(extra_overrides))


class SweepFileChecker:
    """Turn the parsed YAML into a Sweep, failing at the first mistake with its line."""

    def __init__(self, source: Path, lines: dict[tuple[str, ...], int]) -> None:
        self.source = source
        self.lines = lines

    def fail(self, path: tuple[str, ...], message: str) -> SweepFileError:
        while path and path not in self.lines:
            path = path[:-1]
        line = self.lines.get(path, 1)
        return SweepFileError(f"{self.source}:{line}: {message}")

    def check(self, data: Any, extra_overrides: list[str]) -> Sweep:
        if not isinstance(data, dict):
            raise self.fail((), "a sweep file is a mapping of " + ", ".join(KEYS))
        for key in data:
            if key not in KEYS:
                raise self.fail((key,), f"unknown key '{key}'; known keys: {', '.join(KEYS)}")
        if all(data.get(key) is None for key in ("n_trials", "timeout", "budget_minutes")):
            raise self.fail((), "set n_trials, timeout or budget_minutes, or the sweep never ends")
        if "space" not in data or not data["space"]:
            raise self.fail(("space",), "'space' must name at least one parameter to search")
        space = tuple(self.param(name, spec) for name, spec in self.mapping(data, "space").items())
        overrides = self.overrides(data, extra_overrides, space)
        base = self.compose(("overrides",), overrides)
        metrics, directions = self.objectives(data, base.task)
        metric, direction = metrics[0], directions[0]
        overrides += [f"task.metric={metric}", f"task.direction={direction}"]
        if "validation_metric" in base.task:  # the trial's epochs are chosen by its value
            overrides.append(f"task.validation_metric={metric}")
        self.check_space(overrides, space)
        sampler = self.choice(data, "sampler", tuple(SAMPLERS))
        if sampler == "grid" and any(param.choices is None for param in space):
            raise self.fail(("sampler",), "the grid sampler needs a list of choices per parameter")
        if len(metrics) > 1 and not SAMPLERS[sampler].multi_objective:
            raise self.fail(("sampler",), f"the {sampler} sampler is single-objective")
        if missing := missing_requirement(sampler):
            raise self.fail(("sampler",), f"the {sampler} sampler needs {missing}")
        # Optuna's pruners judge one objective: a multi-objective sweep trains every trial.
        default_pruner = "none" if len(metrics) > 1 else "median"
        pruner = self.choice(data, "pruner", tuple(PRUNERS), default_pruner)
        if len(metrics) > 1 and pruner != "none":
            raise self.fail(
                ("pruner",), "Optuna's pruners are single-objective: use pruner: none here"
            )
        sampler_options = self.mapping(data, "sampler_options")
        pruner_options = self.mapping(data, "pruner_options")
        self.check_algorithms(space, sampler, sampler_options, pruner, pruner_options)
        return Sweep(
            name=str(data.get("study") or self.source.stem),
            source=str(self.source),
            overrides=tuple(overrides),
            space=space,
            metric=str(metric),
            direction=direction,
            n_trials=self.positive(data, "n_trials", int),
            timeout=self.positive(data, "timeout", (int, float)),
            budget_minutes=self.positive(data, "budget_minutes", (int, float)),
            storage=str(data.get("storage") or DEFAULT_STORAGE),
            sampler=sampler,
            sampler_options=sampler_options,
            pruner=pruner,
            pruner_options=pruner_options,
            seed=self.integer(data, "seed", 0),
            heartbeat_seconds=self.positive(data, "heartbeat_seconds", int) or 30,
            retries=self.integer(data, "retries", 2),
            costs=tuple(metrics[1:]),
            cost_directions=tuple(directions[1:]),
            store_models=self.boolean(data, "store_models", False),
            launcher=self.choice(data, "launcher", tuple(LAUNCHERS), "local"),
            slurm=self.slurm_options(data),
        )

    def slurm_options(self, data: dict) -> dict:
        """The `slurm:` section, checked here so a typo names its line."""
        values = self.mapping(data, "slurm")
        try:
            SlurmOptions.from_mapping(values, "slurm")
        except ConfigError as error:
            raise self.fail(("slurm",), str(error)) from None
        return values

    def check_algorithms(
        self,
        space: tuple[Param, ...],
        sampler: str,
        sampler_options: dict[str, Any],
        pruner: str,
        pruner_options: dict[str, Any],
    ) -> None:
        """Build the sampler and the pruner from the file's options, as each worker will:
        Optuna's constructors are cheap and need no study, so a wrong option fails here, not
        after the study and the parent run exist."""
        grid = {param.path: list(param.choices) for param in space if param.choices}
        self.check_options(
            "sampler_options",
            SAMPLERS[sampler].cls,
            sampler_options,
            lambda: make_sampler(sampler, sampler_options, 0, grid),
        )
        if pruner != "none":  # `none` ignores the options a file kept for another pruner
            self.check_options(
                "pruner_options",
                PRUNERS[pruner],
                pruner_options,
                lambda: make_pruner(pruner, pruner_options),
            )

    def check_options(
        self, key: str, cls: Callable[..., Any], options: dict[str, Any], build: Callable
    ) -> None:
        """Name an option cls cannot take on its own line, then build it: the constructor
        checks the ranges (a negative count, a reduction factor of 1)."""
        if problem := option_problem(cls, options):
            option, why = problem
            raise self.fail((key, option), f"{key}: {why}")
        try:
            with warnings.catch_warnings():  # an experimental option warns again in the sweep
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                build()
        except (TypeError, ValueError) as error:
            first_line = (str(error).splitlines() or [type(error).__name__])[0]
            raise self.fail((key,), f"{key}: {first_line}") from None

    def objectives(self, data: dict, task) -> tuple[list[str], list[Direction]]:
        """The metrics and their directions: the validation score first, then any costs."""
        # By default the score that picks each run's tested epoch: the headline metric, or
        # its validation stand-in when the headline is test-only (BLEU).
        metrics = data.get("metric") or task.get("validation_metric") or task.metric
        metrics = [str(m) for m in metrics] if isinstance(metrics, list) else [str(metrics)]
        if not metrics or len(set(metrics)) != len(metrics):
            raise self.fail(("metric",), "metric: name each objective once")
        if metrics[0] in COST_METRICS:
            raise self.fail(
                ("metric",), f"metric: the first objective is a validation score, not {metrics[0]}"
            )
        scores = validation_scores(task)
        if metrics[0] not in scores:
            raise self.fail(
                ("metric",),
                f"metric: task {task.name} logs no val_{metrics[0]}; its validation scores: "
                f"{', '.join(scores)} (then costs: {', '.join(COST_METRICS)})",
            )
        for cost in metrics[1:]:
            if cost not in COST_METRICS:
                raise self.fail(
                    ("metric",),
                    f"metric: after the validation score come costs "
                    f"({', '.join(COST_METRICS)}), not {cost}",
                )
        # task.direction is the headline metric's; of the other scores a sweep may rank by
        # (validation_scores), only the loss can run the other way.
        score_direction = "minimize" if metrics[0] == "loss" else task.direction
        defaults = [score_direction, *(COST_METRICS[cost] for cost in metrics[1:])]
        directions = data.get("direction") or defaults
        if not isinstance(directions, list):
            directions = [directions] if len(metrics) == 1 else None
        if directions is None or len(directions) != len(metrics):
            raise self.fail(("direction",), f"direction: give one per metric ({len(metrics)})")
        checked: list[Direction] = []
        for direction in directions:
            if not is_direction(direction):
                message = f"direction must be maximize or minimize, not {direction}"
                raise self.fail(("direction",), message)
            checked.append(direction)
        return metrics, checked

    def param(self, name: str, spec: Any) -> Param:
        where = ("space", name)
        if isinstance(spec, list):
            spec = {"choices": spec}
        if not isinstance(spec, dict):
            raise self.fail(where, f"{name}: give a list of choices or a mapping with low and high")
        for key in spec:
            if key not in PARAM_KEYS:
                raise self.fail((*where, key), f"{name}: unknown key '{key}'; use {PARAM_KEYS}")
        if "choices" in spec:
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices:
                raise self.fail((*where, "choices"), f"{name}: the list of choices is empty")
            if len(set(map(repr, choices))) != len(choices):
                raise self.fail((*where, "choices"), f"{name}: a choice is listed twice")
            return Param(path=name, choices=tuple(choices))
        low, high = self.number(name, spec, "low"), self.number(name, spec, "high")
        step = None if spec.get("step") is None else self.number(name, spec, "step")
        if not low < high:
            message = f"{name}: bad range: low {low} is not below high {high}"
            raise self.fail((*where, "high"), message)
        log = bool(spec.get("log", False))
        if log and low <= 0:
            raise self.fail((*where, "low"), f"{name}: a log range needs low > 0, got {low}")
        if step is not None and (step <= 0 or log):
            raise self.fail((*where, "step"), f"{name}: step must be > 0 and not used with log")
        return Param(path=name, low=low, high=high, log=log, step=step)

    def number(self, name: str, spec: dict, key: str) -> float:
        """A range's `low`, `high` or `step`: an int or a float, never a bool or text."""
        value = spec.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) else ""
            message = f"{name}: {key} must be a number, got {value!r}{hint}"
            raise self.fail(("space", name, key), message)
        return value

    def check_space(self, overrides: list[str], space: tuple[Param, ...]) -> None:
        """Every path exists; every choice and both ends of every range compose and validate."""
        groups = [param for param in space if (CONF_DIR / param.path).is_dir()]
        first_choices = []
        for param in groups:
            allowed = group_choices(param.path)
            unknown = [c for c in param.choices or [] if str(c) not in allowed]
            if param.choices is None or unknown:
                got = f"unknown {param.path} '{unknown[0]}'" if unknown else "a range"
                message = f"{got}; choose one of: {', '.join(allowed)}"
                raise self.fail(("space", param.path), message)
            first_choices.append(f"{param.path}={param.choices[0]}")
        cfg = self.compose(("space",), [*overrides, *first_choices])
        for param in space:
            missing = OmegaConf.select(cfg, param.path, default=KeyError) is KeyError
            if param not in groups and missing:
                raise self.fail(("space", param.path), f"unknown parameter path '{param.path}'")
        checks = []
        for param in space:
            others = [f"{p.path}={sample_values(p)[0]}" for p in space if p is not param]
            for value in sample_values(param):
                checks.append(
                    (("space", param.path), [*overrides, *others, f"{param.path}={value}"])
                )
        self.compose_all(checks)

    def overrides(self, data: dict, extra: list[str], space: tuple[Param, ...]) -> list[str]:
        listed = data.get("overrides") or []
        if not isinstance(listed, list) or not all(isinstance(o, str) for o in listed):
            raise self.fail(("overrides",), "overrides must be a list of key=value strings")
        for override in [*listed, *extra]:
            if override.startswith(("+", "~")) or "=" not in override:
                raise self.fail(("overrides",), f"use key=value overrides only, not '{override}'")
        try:
            return without_searched([*listed, *extra], space)
        except ConfigError as error:
            raise self.fail(("overrides",), str(error)) from None

    def compose_all(self, checks: Sequence[tuple[tuple[str, ...], list[str]]]) -> None:
        """Compose every (where, overrides) check: through Hydra once per set of group
        choices (`compose_many`: 0.3 s a file, not 2 s), and one by one only if one fails,
        to name the line of the first that does."""
        try:
            compose_many([overrides for _, overrides in checks])
        except Exception:
            for where, overrides in checks:
                self.compose(where, overrides)
            raise

    def compose(self, where: tuple[str, ...], overrides: list[str]):
        try:
            return compose_config(overrides)
        except ConfigError as error:
            raise self.fail(where, str(error)) from None

    def mapping(self, data: dict, key: str) -> dict[str, Any]:
        value = data.get(key) or {}
        if not isinstance(value, dict):
            raise self.fail((key,), f"{key} must be a mapping")
        return dict(value)

    def choice(
        self, data: dict, key: str, allowed: tuple[str, ...], default: str | None = None
    ) -> str:
        value = str(data.get(key) or default or allowed[0])
        if value not in allowed:
            raise self.fail((key,), f"unknown {key} '{value}'; choose one of: {', '.join(allowed)}")
        return value

    def boolean(self, data: dict, key: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail((key,), f"{key} must be true or false, got {value!r}")
        return value

    def integer(self, data: dict, key: str, default: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail((key,), f"{key} must be a whole number >= 0, got {value!r}")
        return value

    def positive(self, data: dict, key: str, kind) -> Any:
        value = data.get(key)
        wrong_type = isinstance(value, bool) or not isinstance(value, kind)
        if value is not None and (wrong_type or value <= 0):
            raise self.fail((key,), f"{key} must be a positive number, got {value!r}")
        return value
