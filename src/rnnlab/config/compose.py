"""Hydra's composition of `conf/`, checked, and an experiment's settings for one task or cell.

An experiment (`conf/experiment/`) sets keys for all its runs as plain keys, and keys for the
runs of one task under `per_task.<task>`, in the same shape: `per_task: {adding: {task:
{length: 50}}}` is `task.length=50` for the adding points only. `per_cell.<cell name>` does
the same for one cell's runs: a key only that cell has (chrono's T_max, the IndRNN's bound).
"""

from __future__ import annotations

from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from rnnlab.config import files
from rnnlab.config.errors import ConfigError, one_line
from rnnlab.config.schemas import validate


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The validated config `rnnlab train` would run with these overrides (tests, sweeps)."""
    cfg = compose_unresolved(overrides)
    validate(cfg)
    return cfg


def compose_unresolved(overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """Hydra's composition, interpolations still unresolved, nothing validated yet."""
    files.check_overrides(list(overrides))
    try:
        with initialize_config_dir(config_dir=str(files.CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    except HydraException as error:
        raise ConfigError(one_line(error)) from None


def check_first_point(
    overrides: list[str], multirun: bool = False, validated: bool = True
) -> DictConfig:
    """The first configuration of a `train` command line (the first value of each sweep
    list), composed as `rnnlab train` runs it and validated: an unknown key or a bad value
    fails here in one line, before `hydra.main` has made its output folder, and so does a
    list without `multirun` (-m). Hydra's own settings (`hydra.*`) are hydra.main's to check.
    `validated=False` only composes (`--cfg job` prints a config as it is)."""
    parsed = files.parse_overrides(overrides)
    first = []
    for override in parsed:
        if override.key_or_group.startswith("hydra.") or override.key_or_group == "hydra":
            continue
        text = override.input_line or ""
        if override.is_sweep_override():
            if not multirun:  # Hydra's own message for it takes six lines
                raise ConfigError(
                    f"'{text}' lists several values: add -m to sweep them, or write "
                    f"{override.get_key_element()}=[...] for a list"
                )
            value = next(iter(override.sweep_string_iterator()), None)
            if value is None:
                continue
            text = f"{override.get_key_element()}={value}"
        first.append(text)
    cfg = compose_unresolved(first)
    if validated:
        cfg = with_experiment_task_overrides(cfg, first)
        validate(cfg)
    return cfg


def _flatten(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(node, dict):
        return [(prefix, node)]
    return [pair for key, value in node.items() for pair in _flatten(value, f"{prefix}{key}.")]


def _override_text(value: Any) -> str:
    """A value as the command line writes it (`null`, `true`, `0.002`, `${horizon}`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_override_text(item) for item in value) + "]"
    return str(value)


def per_task_settings(cfg: DictConfig, task: str, table: str = "per_task") -> list[tuple[str, Any]]:
    """(dotted key, value) of the experiment's `per_task.<task>` (or another `table`),
    interpolations unresolved: a value may read a grid axis (long_range's `${horizon}`)
    that each point sets."""
    node = OmegaConf.select(cfg, f"{table}.{task}")
    if node is None:
        return []
    return [(key.rstrip("."), value) for key, value in _flatten(OmegaConf.to_container(node))]


def per_task_overrides(cfg: DictConfig, task: str, cell: str | None = None) -> list[str]:
    """The experiment's settings for `task` (and for `cell`, if given) as command-line
    overrides (a grid point's)."""
    settings = per_task_settings(cfg, task)
    if cell is not None:
        settings += per_task_settings(cfg, cell, "per_cell")
    return [f"{key}={_override_text(value)}" for key, value in settings]


def with_experiment_task_overrides(cfg: DictConfig, given: list[str]) -> DictConfig:
    """cfg with its experiment's settings for its task and cell (`per_task.<task>`,
    `per_cell.<cell name>`).

    `rnnlab paper` composes each grid point with them as overrides; `rnnlab train
    experiment=NAME` (and `-m`) applies them here, so both run the same configurations (the
    same hashes). A key the user `given` on the command line keeps the user's value.
    """
    given_keys = {o.key_or_group for o in OverridesParser.create().parse_overrides(given)}
    settings = per_task_settings(cfg, cfg.task.name)
    settings += per_task_settings(cfg, cfg.cell.name, "per_cell")
    for key, value in settings:
        if key not in given_keys:
            OmegaConf.update(cfg, key, value, merge=True)
    return cfg
