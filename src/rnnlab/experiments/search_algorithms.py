"""The samplers and pruners a sweep file may name: one table each, from name to Optuna class.

The sweep file's checker accepts exactly these names and the sweep builds from the same
table, so a name cannot be accepted and then silently run as something else.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import optuna


@dataclass(frozen=True)
class SamplerKind:
    # The sampler's class; every one here takes seed= (BaseSampler itself does not).
    cls: Callable[..., optuna.samplers.BaseSampler]
    multi_objective: bool  # can it search several objectives at once
    needs: str | None = None  # a module it imports on use, with how to install it


SAMPLERS = {
    "tpe": SamplerKind(optuna.samplers.TPESampler, multi_objective=True),
    "random": SamplerKind(optuna.samplers.RandomSampler, multi_objective=True),
    "grid": SamplerKind(optuna.samplers.GridSampler, multi_objective=True),
    # Gaussian-process Bayesian optimisation: strong on a few dozen trials of floats.
    "gp": SamplerKind(optuna.samplers.GPSampler, multi_objective=True, needs="torch"),
    # CMA-ES: numeric spaces; categorical parameters fall back to random sampling.
    "cmaes": SamplerKind(optuna.samplers.CmaEsSampler, multi_objective=False, needs="cmaes"),
}
INSTALL_HINTS = {
    "torch": "PyTorch: .venv/bin/pip install torch==2.13.0 (the CPU build)",
    "cmaes": "cmaes: .venv/bin/pip install cmaes",
}

PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}


def missing_requirement(sampler: str) -> str | None:
    """What the sampler needs that is not installed, as an install hint; None when ready."""
    needs = SAMPLERS[sampler].needs
    if needs is None or importlib.util.find_spec(needs) is not None:
        return None
    return INSTALL_HINTS[needs]


def make_sampler(
    name: str, options: dict, seed: int, grid: dict[str, list] | None = None
) -> optuna.samplers.BaseSampler:
    """The named sampler; `grid` is the grid sampler's search space (every choice)."""
    cls = SAMPLERS[name].cls
    if cls is optuna.samplers.GridSampler:
        if grid is None:
            raise ValueError("the grid sampler needs a grid: every parameter's choices")
        return optuna.samplers.GridSampler(grid, seed=seed, **options)
    return cls(seed=seed, **options)


def make_pruner(name: str, options: dict) -> optuna.pruners.BasePruner:
    """The named pruner; `none` ignores whatever options a file kept for another one."""
    cls = PRUNERS[name]
    return cls() if cls is optuna.pruners.NopPruner else cls(**options)
