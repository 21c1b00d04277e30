"""What identifies a run: the hash of what it computes, and its cell's name."""

from __future__ import annotations

import hashlib

from omegaconf import DictConfig, OmegaConf

from rnnlab.config.migrations import hashed_layout, plain

# Keys that say where a run is recorded or how it prints, not what it computes. `per_task`
# and `per_cell` are an experiment's tables of settings; the run's own are already applied.
# `tune` says how a grid chose its values, which its points' overrides then carry;
# `claims` what its report checks.
NOT_HASHED = ("tracking", "data_dir", "per_task", "per_cell", "tune", "claims")


def config_hash(cfg: DictConfig) -> str:
    """Identifies what a run computes: the resolved config without where it is recorded,
    in the layout hashes were defined in (migrations), so a new layout keeps every hash."""
    content = plain(cfg)
    for key in NOT_HASHED:
        content.pop(key, None)
    content.get("trainer", {}).pop("verbose", None)
    content = hashed_layout(content)
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(content)).encode()).hexdigest()[:16]


def cell_name(cell_cfg: DictConfig) -> str:
    """The cell's `name` key, else its class name: how reports and run names call it."""
    return cell_cfg.get("name") or cell_cfg._target_.rsplit(".", 1)[-1]
