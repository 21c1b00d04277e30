"""The one path every run takes: data, model, callbacks, fit, test, metrics.

The CLI, the tests and the benchmarks all call `run`; nothing trains another way.
"""

from __future__ import annotations

import statistics
import sys

import keras
import mlflow
import optuna
import tensorflow as tf
from hydra.utils import instantiate
from omegaconf import DictConfig

from rnnlab.callbacks import MlflowEpochLogger, StopOnNonFiniteLoss
from rnnlab.models import recurrent_stack
from rnnlab.tasks import get_task
from rnnlab.tracking import tracked_run


def seed_everything(seed: int, reproducible: bool) -> None:
    """Seed Python, NumPy and Keras; with `reproducible`, make TensorFlow ops deterministic."""
    keras.utils.set_random_seed(seed)
    if reproducible:
        tf.config.experimental.enable_op_determinism()


def build_compiled_model(cfg: DictConfig, task) -> keras.Model:
    model = task.build_model(recurrent_stack(cfg.cell, cfg.model))
    optimizer = instantiate(cfg.optimizer, clipnorm=cfg.trainer.clipnorm)
    model.compile(optimizer=optimizer, loss=task.loss, metrics=list(task.metrics))
    return model


def training_callbacks(
    cfg: DictConfig, epoch_logger: MlflowEpochLogger
) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = [StopOnNonFiniteLoss(), epoch_logger]
    if cfg.trainer.early_stopping_patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=cfg.trainer.early_stopping_patience,
                restore_best_weights=cfg.trainer.restore_best_weights,
            )
        )
    return callbacks


def progress_verbosity(verbose: str | int) -> int:
    """`auto` is a live progress bar in a terminal and one line per epoch in a log file."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def run(cfg: DictConfig, trial: optuna.Trial | None = None) -> dict[str, float]:
    """Train cfg.cell on cfg.task, test once on the held-out split, log it all to MLflow.

    Returns the final metrics; `mlflow.last_active_run()` is the run that holds them.
    With an Optuna `trial` (from `rnnlab sweep`), val_<task.metric> is reported every epoch
    so the sweep can prune the run, which then raises optuna.TrialPruned.
    """
    keras.backend.clear_session()
    seed_everything(cfg.seed, cfg.reproducible)
    task = get_task(cfg.task, cfg.data_dir)
    data = task.load(batch_size=cfg.trainer.batch_size, seed=cfg.seed)
    model = build_compiled_model(cfg, task)
    epoch_logger = MlflowEpochLogger()
    tags = {"rnnlab.data_hash": data.data_hash}
    if trial is not None:
        tags |= {"optuna.study": trial.study.study_name, "optuna.trial": str(trial.number)}
    with tracked_run(cfg, tags=tags) as active:
        callbacks = training_callbacks(cfg, epoch_logger)
        if trial is not None:
            from optuna_integration import KerasPruningCallback

            trial.set_user_attr("mlflow_run_id", active.info.run_id)  # to fail it if killed
            callbacks.append(KerasPruningCallback(trial, monitor=f"val_{cfg.task.metric}"))
        print(f"MLflow run {active.info.run_id} in experiment '{cfg.tracking.experiment}'")
        history = model.fit(
            data.train,
            validation_data=data.validation,
            epochs=cfg.trainer.epochs,
            callbacks=callbacks,
            verbose=progress_verbosity(cfg.trainer.verbose),
            shuffle=False,  # the training split shuffles itself, reproducibly from the seed
        )
        test = model.evaluate(data.test, return_dict=True, verbose=0)
        epoch_seconds = statistics.median(epoch_logger.epoch_seconds)
        metrics = {f"test_{name}": float(value) for name, value in test.items()}
        metrics["epoch_seconds"] = epoch_seconds
        metrics["samples_per_second"] = data.train_size / epoch_seconds
        # What a sweep tunes on: the best validation score of any epoch (never the test split).
        validation_scores = history.history.get(f"val_{cfg.task.metric}")
        if validation_scores:
            best = max if cfg.task.direction == "maximize" else min
            metrics[f"best_val_{cfg.task.metric}"] = float(best(validation_scores))
        mlflow.log_metrics(metrics)
    print(f"test {cfg.task.metric}: {metrics['test_' + cfg.task.metric]:.4f}")
    return metrics
