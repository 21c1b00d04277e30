"""A sweep's trial: the sampled values as Hydra overrides, trained like `rnnlab train`.

A trial is an ordinary `run(cfg, trial)`: the same code path, the same MLflow records
(a child run of the sweep's parent), so a trial's numbers mean what a training's do and
the winner retrains with one command.
"""

from __future__ import annotations

import optuna

from rnnlab.config import ConfigError, compose_config
from rnnlab.experiments.sweep_file import Param, Sweep

# The Optuna user attribute holding a failed trial's one-line reason, for the progress line.
FAILURE_ATTR = "failure"
INTERRUPTED_ATTR = "interrupted"  # a trial stopped by Ctrl-C or a killed grid: not counted


def suggest(trial: optuna.Trial, param: Param):
    if param.choices is not None:  # kind "categorical"
        return trial.suggest_categorical(param.path, list(param.choices))
    low, high = param.bounds()
    if param.kind == "int":
        # Kind "int" means low, high and step are ints already: int() only says so to mypy.
        step = int(param.step or 1)
        return trial.suggest_int(param.path, int(low), int(high), log=param.log, step=step)
    return trial.suggest_float(param.path, low, high, log=param.log, step=param.step)


def trial_overrides(sweep: Sweep, trial: optuna.Trial, parent_run_id: str) -> list[str]:
    sampled = [f"{param.path}={suggest(trial, param)}" for param in sweep.space]
    return [
        "probe.plots=false",  # a trial's curves are in its metrics and JSON; a file may say true
        # A trial is short and one of many: a model each would fill the store (store_models
        # turns them on), and its system metrics would be a sample or two.
        f"tracking.log_model={str(sweep.store_models).lower()}",
        "tracking.system_metrics=false",
        *sweep.overrides,
        *sampled,
        f"tracking.parent_run_id={parent_run_id}",
        f"tracking.run_name={sweep.name}-trial{trial.number}",
    ]


class Objective:
    """One trial: compose the config with the sampled values and train it like `rnnlab train`."""

    def __init__(self, sweep: Sweep, parent_run_id: str) -> None:
        self.sweep = sweep
        self.parent_run_id = parent_run_id

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        # Imported only now: the coordinator, which never trains, never loads TensorFlow.
        from rnnlab.training.callbacks import NonFiniteLossError
        from rnnlab.training.run import run

        cfg = compose_config(trial_overrides(self.sweep, trial, self.parent_run_id))
        try:
            metrics = run(cfg, trial=trial).metrics
        except (NonFiniteLossError, ConfigError) as error:
            trial.set_user_attr(FAILURE_ATTR, str(error).splitlines()[0])
            raise
        except KeyboardInterrupt:
            # Optuna fails the trial; it spent no budget, so a resume runs it again.
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            raise
        values = tuple(metrics[objective] for objective in self.sweep.objectives)
        return values if self.sweep.multi_objective else values[0]
