"""Compose and validate run configs before TensorFlow is imported, so mistakes fail in a second.

Hydra composes `conf/`; this module adds what Hydra does not check: that a group choice
exists (with the allowed ones named on one line) and that values have the right type and range.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"


class ConfigError(ValueError):
    """A config mistake, reported to the user as one line."""


def group_choices(group: str) -> list[str]:
    """The options of a config group, e.g. `cell` -> ['gru', 'lstm', 'simple_rnn']."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def check_overrides(overrides: list[str]) -> None:
    """Reject an unknown group choice such as `cell=foo`, naming the allowed ones."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as error:
        raise ConfigError(str(error).splitlines()[0]) from None
    for override in parsed:
        group = override.key_or_group
        if override.is_delete() or not (CONF_DIR / group).is_dir():
            continue
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [str(override.value())]
        allowed = group_choices(group)
        for value in values:
            if value not in allowed:
                raise ConfigError(f"unknown {group} '{value}'; choose one of: {', '.join(allowed)}")


PRECISIONS = ("float32", "mixed_bfloat16")  # Keras dtype policies


@dataclass
class TrainerSchema:
    epochs: int
    batch_size: int
    early_stopping_patience: int | None
    restore_best_weights: bool
    clipnorm: float | None
    verbose: Any
    precision: str
    ema_momentum: float | None = None  # absent from runs stored before it: no averaging

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"trainer.epochs must be at least 1, got {self.epochs}")
        _require(
            self.batch_size >= 1, f"trainer.batch_size must be at least 1, got {self.batch_size}"
        )
        _require(
            self.early_stopping_patience is None or self.early_stopping_patience >= 0,
            "trainer.early_stopping_patience must be null or >= 0, "
            f"got {self.early_stopping_patience}",
        )
        _require(
            self.clipnorm is None or self.clipnorm > 0,
            f"trainer.clipnorm must be null or > 0, got {self.clipnorm}",
        )
        _require(
            self.ema_momentum is None or 0 < self.ema_momentum < 1,
            f"trainer.ema_momentum must be null or in (0, 1), got {self.ema_momentum}",
        )
        _require(
            self.verbose in ("auto", 0, 1, 2),
            f"trainer.verbose must be one of auto, 0, 1, 2; got {self.verbose}",
        )
        _require(
            self.precision in PRECISIONS,
            f"trainer.precision must be one of {', '.join(PRECISIONS)}; got {self.precision}",
        )


@dataclass
class ModelSchema:
    layers: int
    dropout: float
    bidirectional: bool
    fused: bool
    unroll: bool
    param_budget: int | None

    def __post_init__(self) -> None:
        _require(self.layers >= 1, f"model.layers must be at least 1, got {self.layers}")
        _require(
            self.param_budget is None or self.param_budget >= 1,
            f"model.param_budget must be null or a positive integer, got {self.param_budget}",
        )
        _require(0 <= self.dropout < 1, f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class ProbeSchema:
    enabled: bool
    every_n_epochs: int
    layers: Any
    examples: int
    explode_norm: float
    plots: bool

    def __post_init__(self) -> None:
        _require(
            self.every_n_epochs >= 1,
            f"probe.every_n_epochs must be at least 1, got {self.every_n_epochs}",
        )
        _require(self.examples >= 1, f"probe.examples must be at least 1, got {self.examples}")


@dataclass
class TrackingSchema:
    uri: str
    experiment: str
    run_name: str | None
    parent_run_id: str | None
    log_model: bool
    system_metrics: bool
    system_metrics_seconds: float

    def __post_init__(self) -> None:
        _require(
            self.system_metrics_seconds > 0,
            f"tracking.system_metrics_seconds must be > 0, got {self.system_metrics_seconds}",
        )


SCHEMAS = {
    "trainer": TrainerSchema,
    "model": ModelSchema,
    "probe": ProbeSchema,
    "tracking": TrackingSchema,
}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(cfg: DictConfig) -> None:
    """Check types and ranges of the resolved config; raise ConfigError with one line."""
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as error:
        raise ConfigError(str(error).splitlines()[0]) from None
    for group, schema in SCHEMAS.items():
        try:
            OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg[group]))
        except OmegaConfBaseException as error:
            raise ConfigError(f"{group}.{error.full_key}: {str(error).splitlines()[0]}") from None
    for key in ("_target_", "units"):
        _require(key in cfg.cell, f"cell needs a '{key}' key (see conf/cell/lstm.yaml)")
    _require(
        isinstance(cfg.cell.units, int) and cfg.cell.units >= 1,
        f"cell.units must be a positive integer, got {cfg.cell.units}",
    )
    _require(isinstance(cfg.seed, int), f"seed must be an integer, got {cfg.seed!r}")
    _require(
        cfg.task.direction in ("maximize", "minimize"),
        f"task.direction must be maximize or minimize, got {cfg.task.direction}",
    )


def cell_name(cell_cfg: DictConfig) -> str:
    """The cell's `name` key, else its class name: how reports and run names call it."""
    return cell_cfg.get("name") or cell_cfg._target_.rsplit(".", 1)[-1]


# Keys that say where a run is recorded or how it prints, not what it computes.
NOT_HASHED = ("tracking", "data_dir", "experiment_task_overrides")
# Keys added after runs were stored, with the value that computes what those runs did:
# hashed only when set to something else, so the finished grid points stay finished.
HASHED_WHEN_SET = {("trainer", "ema_momentum"): None}


# Classes that moved to another module: {path runs were stored with: path today}. A run's
# identity keeps the stored path, and a stored config builds the class at today's path.
MOVED_CLASSES = {
    f"rnnlab.cells.{name}": f"rnnlab.recurrence.cells.{name}"
    for name in ("IndRNNCell", "LRUCell", "MinGRUCell", "MinLSTMCell")
}


def migrate_stored(cfg: DictConfig) -> DictConfig:
    """A config stored by an earlier rnnlab, in today's terms (classes at today's paths)."""
    target = OmegaConf.select(cfg, "cell._target_")
    if target in MOVED_CLASSES:
        cfg.cell._target_ = MOVED_CLASSES[target]
    return cfg


def config_hash(cfg: DictConfig) -> str:
    """Identifies what a run computes: the resolved config without where it is recorded."""
    content = OmegaConf.to_container(cfg, resolve=True)
    stored_paths = {today: stored for stored, today in MOVED_CLASSES.items()}
    cell = content.get("cell", {})
    if cell.get("_target_") in stored_paths:
        cell["_target_"] = stored_paths[cell["_target_"]]
    for key in NOT_HASHED:
        content.pop(key, None)
    content.get("trainer", {}).pop("verbose", None)
    for (group, key), old_behaviour in HASHED_WHEN_SET.items():
        if content.get(group, {}).get(key, old_behaviour) == old_behaviour:
            content.get(group, {}).pop(key, None)
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(content)).encode()).hexdigest()[:16]


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The validated config `rnnlab train` would run with these overrides (tests, sweeps)."""
    cfg = compose_unresolved(overrides)
    validate(cfg)
    return cfg


def compose_unresolved(overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """Hydra's composition, interpolations still unresolved, nothing validated yet."""
    check_overrides(list(overrides))
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    except HydraException as error:
        raise ConfigError(str(error).splitlines()[0]) from None


def split_overrides(overrides: list[str]) -> tuple[list[str], list] | None:
    """(group choices, parsed value overrides), or None where only Hydra can apply one
    (an addition, a deletion, a sweep list)."""
    check_overrides(overrides)
    groups, values = [], []
    for text, override in zip(
        overrides, OverridesParser.create().parse_overrides(list(overrides)), strict=True
    ):
        if override.is_add() or override.is_delete() or override.is_sweep_override():
            return None
        if override.key_or_group == "experiment" or (CONF_DIR / override.key_or_group).is_dir():
            groups.append(text)
        else:
            values.append(override)
    return groups, values


def with_experiment_task_overrides(cfg: DictConfig, given: list[str]) -> DictConfig:
    """cfg with its experiment's overrides for its task (`experiment_task_overrides`).

    `rnnlab paper` composes each grid point with them; `rnnlab train experiment=NAME`
    (and `-m`) applies them here, so both run the same configurations (the same hashes).
    A key the user `given` on the command line keeps the user's value.
    """
    extra = list(cfg.get("experiment_task_overrides", {}).get(cfg.task.name, []))
    given_keys = {o.key_or_group for o in OverridesParser.create().parse_overrides(given)}
    for override in OverridesParser.create().parse_overrides(extra):
        if override.key_or_group not in given_keys:
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    return cfg


def config_files_fingerprint() -> tuple[tuple[str, int], ...]:
    """The config files' paths and modification times: what a cached composition read."""
    return tuple(sorted((str(path), path.stat().st_mtime_ns) for path in CONF_DIR.rglob("*.yaml")))


@functools.lru_cache(maxsize=64)
def composed_groups(groups: tuple[str, ...], fingerprint: tuple) -> DictConfig:
    """compose_unresolved(groups), kept for this process while the files are unchanged
    (`fingerprint`): a sweep file's checks, a grid and its report compose the same few sets
    of group choices again and again. Callers copy it before changing it."""
    return compose_unresolved(list(groups))


def compose_many(override_lists: list[list[str]]) -> list[DictConfig]:
    """compose_config for each list, through Hydra once per distinct set of group choices.

    A grid point differs from the next mostly in plain values (a seed, a length); composing
    each through Hydra costs about 0.2 s, so a 1,000-point grid took minutes before its first
    run and before every report. Values are applied to a copy of the composed groups as
    Hydra applies command-line overrides (after every config file), then validated; a list
    with anything else is composed by Hydra itself.
    """
    fingerprint = config_files_fingerprint()
    configs = []
    for overrides in override_lists:
        split = split_overrides(list(overrides))
        if split is None:
            configs.append(compose_config(overrides))
            continue
        groups, values = split
        cfg = copy.deepcopy(composed_groups(tuple(groups), fingerprint))
        for override in values:
            if OmegaConf.select(cfg, override.key_or_group, default=KeyError) is KeyError:
                cfg = compose_config(overrides)  # Hydra's own error for an unknown key
                break
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        else:
            validate(cfg)
        configs.append(cfg)
    return configs
