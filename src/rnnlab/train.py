"""The one path every run takes: data, model, callbacks, fit, test, metrics.

The CLI, the tests and the benchmarks all call `run`; nothing trains another way.
"""

from __future__ import annotations

import gc
import logging
import statistics
import sys

import keras
import mlflow
import optuna
import tensorflow as tf
from hydra.utils import instantiate
from omegaconf import DictConfig

from rnnlab.callbacks import (
    GradientDecayLogger,
    MlflowEpochLogger,
    ReportToOptuna,
    StopOnNonFiniteLoss,
)
from rnnlab.fused_rnn import recurrence_tags
from rnnlab.models import decoder_stack, recurrent_stack
from rnnlab.probe import GradientProbe, recurrent_layers
from rnnlab.tasks import load_task
from rnnlab.tasks.base import TaskData
from rnnlab.threads import configure_threads
from rnnlab.tracking import tracked_run


def seed_everything(seed: int, reproducible: bool) -> None:
    """Seed Python, NumPy and Keras; with `reproducible`, make TensorFlow ops deterministic."""
    keras.utils.set_random_seed(seed)
    if reproducible:
        tf.config.experimental.enable_op_determinism()


def freeze_long_lived_objects() -> None:
    """Exempt what exists before the first run (imports, mostly) from garbage collection.

    clear_session collects garbage between runs; scanning TensorFlow's half a million
    import-time objects made that 0.5 s of every sweep trial. Frozen once per process.
    """
    if not gc.get_freeze_count():
        gc.collect()
        gc.freeze()


def build_compiled_model(cfg: DictConfig, task) -> keras.Model:
    # Tasks that generate sequences (translation, captioning) say so and get a decoder stack.
    has_decoder = getattr(task, "has_decoder", False)
    stacks = {"decoder": decoder_stack(cfg.cell, cfg.model)} if has_decoder else {}
    model = task.build_model(recurrent_stack(cfg.cell, cfg.model), **stacks)
    optimizer = instantiate(cfg.optimizer, clipnorm=cfg.trainer.clipnorm)
    model.compile(optimizer=optimizer, loss=task.loss, metrics=list(task.metrics))
    return model


def gradient_probe(
    cfg: DictConfig, model: keras.Model, task, data
) -> list[keras.callbacks.Callback]:
    """The probe callback, or nothing (with a warning) for a model without recurrent layers."""
    if not cfg.probe.enabled:
        return []
    if not recurrent_layers(model):
        logging.getLogger("rnnlab").warning("no recurrent layer to probe: gradient decay skipped")
        return []
    probe = GradientProbe(model, task.loss, cfg.probe.layers)
    batch = next(iter(data.validation.unbatch().batch(cfg.probe.examples)))
    probe_cfg = cfg.probe
    return [
        GradientDecayLogger(
            probe, batch, probe_cfg.every_n_epochs, probe_cfg.explode_norm, probe_cfg.plots
        )
    ]


def training_callbacks(
    cfg: DictConfig, model: keras.Model, task, data: TaskData
) -> tuple[list[keras.callbacks.Callback], MlflowEpochLogger]:
    """Everything `fit` calls back into, and the epoch logger that times the epochs."""
    callbacks = [StopOnNonFiniteLoss(), *gradient_probe(cfg, model, task, data)]
    if cfg.trainer.early_stopping_patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=cfg.trainer.early_stopping_patience,
                restore_best_weights=cfg.trainer.restore_best_weights,
            )
        )
    # Last, so that the epoch time it logs includes every other callback's work.
    epoch_logger = MlflowEpochLogger()
    return [*callbacks, epoch_logger], epoch_logger


def progress_verbosity(verbose: str | int) -> int:
    """`auto` is a live progress bar in a terminal and one line per epoch in a log file."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def run(
    cfg: DictConfig, trial: optuna.Trial | None = None, tags: dict[str, str] | None = None
) -> dict[str, float]:
    """Train cfg.cell on cfg.task, test once on the held-out split, log it all to MLflow.

    `tags` are added to the run's own. Returns the final metrics; `mlflow.last_active_run()`
    is the run that holds them. With an Optuna `trial` (from `rnnlab sweep`),
    val_<task.metric> is reported every epoch so the sweep can prune the run, which then
    raises optuna.TrialPruned.
    """
    configure_threads()  # only before TensorFlow's first op in this process
    freeze_long_lived_objects()
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(cfg.trainer.precision)
    seed_everything(cfg.seed, cfg.reproducible)
    task, data = load_task(cfg.task, cfg.data_dir, cfg.trainer.batch_size, cfg.seed)
    model = build_compiled_model(cfg, task)
    callbacks, epoch_logger = training_callbacks(cfg, model, task, data)
    tags = {"rnnlab.data_hash": data.data_hash, **(tags or {})}
    if trial is not None:
        tags |= {"optuna.study": trial.study.study_name, "optuna.trial": str(trial.number)}
    with tracked_run(cfg, tags=tags) as active:
        if trial is not None:
            trial.set_user_attr("mlflow_run_id", active.info.run_id)  # to fail it if killed
            monitor = f"val_{cfg.task.metric}"
            callbacks.append(ReportToOptuna(trial, monitor, cfg.task.direction))
        print(f"MLflow run {active.info.run_id} in experiment '{cfg.tracking.experiment}'")
        history = model.fit(
            data.train,
            validation_data=data.validation,
            epochs=cfg.trainer.epochs,
            callbacks=callbacks,
            verbose=progress_verbosity(cfg.trainer.verbose),
            shuffle=False,  # the training split shuffles itself, reproducibly from the seed
        )
        mlflow.set_tags(recurrence_tags(recurrent_layers(model)))
        test = model.evaluate(data.test, return_dict=True, verbose=0)
        epoch_seconds = statistics.median(epoch_logger.epoch_seconds)
        metrics = {f"test_{name}": float(value) for name, value in test.items()}
        # Optional hook for what `evaluate` cannot give: baselines, BLEU, sample outputs.
        evaluate_extra = getattr(task, "evaluate_extra", lambda model, data: ({}, {}))
        extra_metrics, artifacts = evaluate_extra(model, data)
        metrics.update({f"test_{name}": float(value) for name, value in extra_metrics.items()})
        for file_name, text in artifacts.items():
            mlflow.log_text(text, file_name)
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
