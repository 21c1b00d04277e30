"""`rnnlab <command> [hydra overrides]`: the console entry point.

Config mistakes are caught here before TensorFlow is imported, and every error the user
can fix is reported as one line (`rnnlab: ...`) instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from rnnlab.config import CONF_DIR, ConfigError, check_overrides, validate

# TensorFlow's C++ start-up notes drown the progress bar; its warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

USAGE = """usage: rnnlab <command> [options]

commands:
  train [overrides]   train one run; `-m` sweeps comma lists (e.g. -m cell=lstm,gru)
  prepare [task ...]  fetch and build the embedded datasets (run by `make install`)
  sweep <file> [overrides] [--workers N]
                      an Optuna search (sweeps/<name>.yaml); the same command resumes it

examples:
  rnnlab train cell=gru cell.units=32 trainer.epochs=3 seed=1
  rnnlab train -m cell=simple_rnn,lstm,gru
  rnnlab train --cfg job       # print the composed config and exit
  rnnlab sweep sweeps/sentiment_cells.yaml --workers 2
"""


def train_job(cfg: DictConfig) -> float:
    """Hydra's task function: validate, then train (TensorFlow is imported only now)."""
    logging.getLogger("absl").setLevel(logging.WARNING)  # TFDS reports every file it opens
    try:
        validate(cfg)
    except ConfigError as error:
        sys.exit(f"rnnlab: {error}")
    import mlflow

    from rnnlab.callbacks import NonFiniteLossError
    from rnnlab.datasets import DataNotPreparedError
    from rnnlab.train import run

    try:
        metrics = run(cfg)
    except (ConfigError, DataNotPreparedError, NonFiniteLossError, InstantiationException) as error:
        sys.exit(f"rnnlab: {str(error).splitlines()[0]}")
    print(f"run {mlflow.last_active_run().info.run_id}: `make ui` shows it")
    return metrics[f"test_{cfg.task.metric}"]


def train(arguments: list[str]) -> None:
    check_overrides([arg for arg in arguments if not arg.startswith("-")])
    sys.argv = ["rnnlab train", *arguments]
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(train_job)()


def prepare(task_names: list[str]) -> None:
    from rnnlab.config import compose_config, group_choices
    from rnnlab.tasks import TASK_MODULES, get_task

    for name in task_names or [n for n in group_choices("task") if n in TASK_MODULES]:
        cfg = compose_config([f"task={name}"])
        print(f"preparing {name} in {cfg.data_dir}/ ...", flush=True)
        get_task(cfg.task, cfg.data_dir).prepare()


def sweep(arguments: list[str]) -> None:
    logging.getLogger("absl").setLevel(logging.WARNING)
    from rnnlab.sweep import main as sweep_main

    sweep_main(arguments)


COMMANDS = {"train": train, "prepare": prepare, "sweep": sweep}


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if not arguments or arguments[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return
    command, rest = arguments[0], arguments[1:]
    if command not in COMMANDS:
        sys.exit(f"rnnlab: unknown command '{command}'; choose one of: {', '.join(COMMANDS)}")
    try:
        COMMANDS[command](rest)
    except ConfigError as error:
        sys.exit(f"rnnlab: {error}")


if __name__ == "__main__":
    main()
