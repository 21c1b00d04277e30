"""An experiment's grid: its points, and each point's config hash, task, metric and cell.

An experiment is a Hydra overlay in `conf/experiment/` whose `hydra.sweeper.params` is its
grid (so `rnnlab train -m experiment=NAME` also runs it), with optional `per_task`
settings that size each task for the experiment's budget. Both the
paper runner (`paper.py`) and the report need the grid; neither needs the other, and
nothing here trains. The points' facts are cached, so a grid of thousands of points is
decided in milliseconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import rnnlab
from rnnlab.config import (
    CONF_DIR,
    ConfigError,
    cell_name,
    compose_many,
    config_hash,
    group_choices,
    per_task_overrides,
)


@dataclass
class GridPoint:
    """One configuration of an experiment: its grid coordinates and all its overrides."""

    axes: list[str]  # e.g. ["task=adding", "cell=lstm", "seed=0"]
    overrides: list[str]  # the experiment, the axes, then the task's own overrides


def entry_key(point: GridPoint) -> str:
    """A grid entry: the point's axes but its seed (`task=adding cell=gru`); its seeds are
    one entry of the report's table, and one study of a tuned grid (tuning.py)."""
    return " ".join(axis for axis in point.axes if not axis.startswith("seed="))


def experiment_grid(name: str) -> list[GridPoint]:
    """Every point of the experiment's grid, in a stable order."""
    if name not in group_choices("experiment"):
        raise ConfigError(
            f"unknown experiment '{name}'; choose one of: {', '.join(group_choices('experiment'))}"
        )
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=[f"experiment={name}"], return_hydra_config=True
        )
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    axes = [
        [f"{key}={value.strip()}" for value in str(values).split(",")]
        for key, values in params.items()
    ]
    grid = []
    for axes_values in itertools.product(*axes):
        task = next((o.split("=", 1)[1] for o in axes_values if o.startswith("task=")), None)
        cell = next((o.split("=", 1)[1] for o in axes_values if o.startswith("cell=")), None)
        # Unresolved: a setting may read a grid axis (long_range's ${horizon}), which each
        # point sets; resolving here would give every point the experiment's default.
        extra = per_task_overrides(cfg, task or cfg.task.name, cell or cfg.cell.name)
        grid.append(GridPoint(list(axes_values), [f"experiment={name}", *axes_values, *extra]))
    return grid


@dataclass(frozen=True)
class PointFacts:
    """What a resume and a report need of a composed grid point, cached between commands."""

    config_hash: str
    task: str
    metric: str
    direction: str
    cell: str


def grid_cache_key(override_lists: list[list[str]]) -> str:
    """Changes with the config files, the code that composes and hashes them, rnnlab's
    version and the points' overrides."""
    digest = hashlib.sha256(f"{rnnlab.__version__}\n{json.dumps(override_lists)}".encode())
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        digest.update(str(path.relative_to(CONF_DIR)).encode() + b"\0" + path.read_bytes())
    package = Path(rnnlab.__file__).parent
    modules = [*sorted((package / "config").glob("*.py")), package / "experiments" / "grids.py"]
    for module in [*modules, package / "records" / "tracking.py"]:
        digest.update(module.read_bytes())
    return digest.hexdigest()[:24]


def grid_cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnnlab" / "grids"


def grid_facts(
    name: str,
    extra_overrides: Sequence[str] = (),
    tuned: Mapping[str, Sequence[str]] | None = None,
) -> list[tuple[GridPoint, PointFacts]]:
    """Every grid point with its config hash, task, metric and cell; `tuned` adds each
    entry's chosen values (tuning.py) to its points' overrides, before the command line's.

    Composed once per distinct group choices (compose_many), and remembered in a cache
    keyed by the config files' contents, so the next `rnnlab paper` or `rnnlab report` of
    the same grid decides in milliseconds instead of composing every point again.
    """
    tuned = tuned or {}
    if name not in group_choices("experiment"):
        experiment_grid(name)  # its one-line error, never a cached answer
    chosen = sorted((key, list(values)) for key, values in tuned.items())
    key = grid_cache_key([[name, *extra_overrides], *[[k, *v] for k, v in chosen]])
    cache = grid_cache_folder() / f"{key}.json"
    try:
        cached = json.loads(cache.read_text())
        return [(GridPoint(**point), PointFacts(**facts)) for point, facts in cached]
    except (OSError, ValueError, TypeError):
        pass
    grid = experiment_grid(name)
    for point in grid:
        point.overrides += list(tuned.get(entry_key(point), ()))
    lists = [[*point.overrides, *extra_overrides] for point in grid]
    facts = [
        PointFacts(
            config_hash(cfg),
            cfg.task.name,
            cfg.task.metric,
            cfg.task.direction,
            cell_name(cfg.cell),
        )
        for cfg in compose_many(lists)
    ]
    with contextlib.suppress(OSError):  # a read-only home only loses the speed-up
        cache.parent.mkdir(parents=True, exist_ok=True)
        entries = [
            [dataclasses.asdict(p), dataclasses.asdict(f)] for p, f in zip(grid, facts, strict=True)
        ]
        cache.write_text(json.dumps(entries))
    return list(zip(grid, facts, strict=True))
