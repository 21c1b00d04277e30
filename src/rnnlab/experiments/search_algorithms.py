"""The samplers and pruners a sweep file may name: one table each, from name to Optuna class.

The sweep file's checker accepts exactly these names and the sweep builds from the same
table, so a name cannot be accepted and then silently run as something else.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def is_grid(name: str) -> bool:
    return SAMPLERS[name].cls is optuna.samplers.GridSampler


def sampler_seed(name: str, seed: int, worker: int, trials_so_far: int) -> int:
    """The seed of one worker's sampler: its own for each worker, and on resume one that
    starts the random stream where the finished trials left it, so workers and resumes do
    not repeat each other's draws.

    Not for the grid sampler: Optuna shuffles its grid by the seed and gives trial k the
    k-th point of that order, so every worker and every resume must share one seed. With a
    seed per worker, two workers ran the same point twice and skipped another (a tuned
    grid's 4 rates on 2 workers tried 2 of them, twice each)."""
    if is_grid(name):
        return seed
    return seed + 1000 * worker + trials_so_far


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


# The annotations Optuna's constructors spell their plain options with, as the YAML types
# that fit them; a parameter annotated otherwise (a callable, a sampler) is not type-checked.
ANNOTATION_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "None": (type(None),),
}
# Keyword arguments rnnlab passes itself: a file's copy would clash with them.
RESERVED_OPTIONS = {
    "seed": "set it with the top-level `seed:` key",
    "search_space": "the grid is the space's choices",
}


def option_problem(cls: Callable[..., Any], options: dict[str, Any]) -> tuple[str, str] | None:
    """The first option `cls` cannot take, as (option, why); None when all can be passed.

    Read from the constructor's signature, so an unknown keyword or a value of the wrong
    type is named before anything is built; ranges are the constructor's own to check.
    """
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    name = getattr(cls, "__name__", str(cls))
    for option, value in options.items():
        if option in RESERVED_OPTIONS:
            return option, f"'{option}' is not an option here: {RESERVED_OPTIONS[option]}"
        if option not in parameters:
            if takes_any:
                continue
            known = ", ".join(p for p in parameters if p not in RESERVED_OPTIONS)
            return option, f"unknown option '{option}' of Optuna's {name}; its options: {known}"
        annotation = parameters[option].annotation
        spelled = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        parts = [part.strip() for part in str(spelled).split("|")]
        if "Callable" in str(spelled) and not callable(value):
            return option, f"{option} takes a Python function, which a sweep file cannot give"
        if not all(part in ANNOTATION_TYPES for part in parts):
            continue  # an object (a mapping, a sampler): the constructor judges it
        allowed = tuple(t for part in parts for t in ANNOTATION_TYPES[part])
        wrong_bool = isinstance(value, bool) and bool not in allowed
        if wrong_bool or not isinstance(value, allowed):
            wanted = " or ".join(part for part in parts if part != "None")
            return option, f"{option} must be {wanted}, got {value!r}"
    return None


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
