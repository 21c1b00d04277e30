"""compose_config for many override lists, through Hydra once per set of group choices.

A grid point differs from the next mostly in plain values (a seed, a length); composing
each through Hydra costs about 0.2 s, so a 1,000-point grid took minutes before its first
run and before every report. This module applies value overrides as Hydra applies
command-line overrides (after every config file) to a copy of the composed groups; a list
with anything else (an addition, a deletion, a sweep list) is composed by Hydra itself.
"""

from __future__ import annotations

import copy
import functools

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from rnnlab.config import files
from rnnlab.config.compose import compose_config, compose_unresolved
from rnnlab.config.schemas import validate


def split_overrides(overrides: list[str]) -> tuple[list[str], list] | None:
    """(group choices, parsed value overrides), or None where only Hydra can apply one
    (an addition, a deletion, a sweep list)."""
    files.check_overrides(overrides)
    groups, values = [], []
    for text, override in zip(
        overrides, OverridesParser.create().parse_overrides(list(overrides)), strict=True
    ):
        if override.is_add() or override.is_delete() or override.is_sweep_override():
            return None
        if override.key_or_group == "experiment" or files.is_group(override.key_or_group):
            groups.append(text)
        else:
            values.append(override)
    return groups, values


def config_files_fingerprint() -> tuple[tuple[str, int], ...]:
    """The config files' paths and modification times: what a cached composition read."""
    return tuple(
        sorted((str(path), path.stat().st_mtime_ns) for path in files.CONF_DIR.rglob("*.yaml"))
    )


@functools.lru_cache(maxsize=64)
def composed_groups(groups: tuple[str, ...], fingerprint: tuple) -> DictConfig:
    """compose_unresolved(groups), kept for this process while the files are unchanged
    (`fingerprint`): a sweep file's checks, a grid and its report compose the same few sets
    of group choices again and again. Callers copy it before changing it."""
    return compose_unresolved(list(groups))


def compose_many(override_lists: list[list[str]]) -> list[DictConfig]:
    """compose_config for each list, equal to it, in a fraction of the time."""
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
