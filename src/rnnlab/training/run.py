"""The one path every run takes: data, model, callbacks, fit, test, metrics.

The CLI, the tests and the benchmarks all call `run`; nothing trains another way.
"""

from __future__ import annotations

import gc
import logging
import statistics
import sys
from dataclasses import dataclass
from typing import cast

import keras
import mlflow
import optuna
import tensorflow as tf
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rnnlab.records import names
from rnnlab.records.stored_model import log_stored_model
from rnnlab.records.tracking import log_datasets, recurrence_tags, tracked_run
from rnnlab.recurrence.custom_gradients import forget_custom_gradients
from rnnlab.recurrence.layer import recurrent_layers
from rnnlab.recurrence.stack import decoder_stack, recurrent_stack
from rnnlab.tasks import load_task
from rnnlab.tasks.base import Task, TaskData, first_examples
from rnnlab.threads import configure_threads
from rnnlab.training.budget import parameter_counts, units_for_budget
from rnnlab.training.callbacks import (
    AveragedWeights,
    AveragesOutlastStopping,
    BestEpoch,
    GradientDecayLogger,
    MlflowEpochLogger,
    ReportToOptuna,
    StopOnNonFiniteLoss,
    StopWhenAsked,
)
from rnnlab.training.probe import GradientProbe


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


def build_model(cell_cfg: DictConfig, model_cfg: DictConfig, task: Task) -> keras.Model:
    # Tasks that generate sequences (translation, captioning) say so and get a decoder stack.
    stacks = {"decoder": decoder_stack(cell_cfg, model_cfg)} if task.has_decoder else {}
    return task.build_model(recurrent_stack(cell_cfg, model_cfg), **stacks)


def with_units(cell_cfg: DictConfig, units: int) -> DictConfig:
    return cast(DictConfig, OmegaConf.merge(cell_cfg, {"units": units}))  # a mapping stays one


def budgeted_cell(cfg: DictConfig, task) -> DictConfig:
    """cfg.cell, at the width that meets `model.param_budget` when one is set.

    The run's config keeps the units it was composed with (its hash identifies the grid
    point); the width actually built is logged as the `units` metric.
    """
    budget = cfg.model.param_budget
    if budget is None:
        return cfg.cell

    # A cell with heads (xLSTM's) splits its units evenly between them: whole heads only.
    heads = cfg.cell.get("heads") or 1

    def count_for(head_count: int) -> int:
        model = build_model(with_units(cfg.cell, head_count * heads), cfg.model, task)
        return parameter_counts(model)["n_params"]

    units = units_for_budget(budget, count_for) * heads
    keras.backend.clear_session()  # the trial builds must not shift the seeded run's names
    return with_units(cfg.cell, units)


def weight_averaging(trainer_cfg: DictConfig) -> dict:
    """The optimizer's arguments for `trainer.ema_momentum`: none when it is null or absent
    (runs stored before the key reproduce without averaging)."""
    momentum = trainer_cfg.get("ema_momentum")
    return {} if momentum is None else {"use_ema": True, "ema_momentum": momentum}


def build_compiled_model(cfg: DictConfig, task, cell_cfg: DictConfig | None = None):
    model = build_model(cfg.cell if cell_cfg is None else cell_cfg, cfg.model, task)
    averaging = weight_averaging(cfg.trainer)
    optimizer = instantiate(cfg.optimizer, clipnorm=cfg.trainer.clipnorm, **averaging)
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
    batch = first_examples(data.validation, cfg.probe.examples)
    probe_cfg = cfg.probe
    return [
        GradientDecayLogger(
            probe, batch, probe_cfg.every_n_epochs, probe_cfg.explode_norm, probe_cfg.plots
        )
    ]


def selection_metric(task_cfg: DictConfig) -> str:
    """The validation score that picks the tested epoch: the headline metric, unless the
    task computes that on the test split only (BLEU) and names a stand-in."""
    return task_cfg.get("validation_metric") or task_cfg.metric


def training_callbacks(
    cfg: DictConfig, model: keras.Model, task, data: TaskData
) -> tuple[list[keras.callbacks.Callback], MlflowEpochLogger, BestEpoch]:
    """Everything `fit` calls back into, the epoch logger that times the epochs, and the
    callback that keeps the epoch validation chose.

    Early stopping watches the same score the best epoch is chosen by and a sweep tunes
    (`val_<selection_metric>`), so it never stops a run that is still improving on it.
    """
    monitor = f"val_{selection_metric(cfg.task)}"
    best_epoch = BestEpoch(monitor, cfg.task.direction, cfg.trainer.restore_best_weights)
    # First, so that every other callback sees the averaged weights, as validation did.
    averaged = [AveragedWeights()] if weight_averaging(cfg.trainer) else []
    callbacks = [
        *averaged,
        StopWhenAsked(),
        StopOnNonFiniteLoss(),
        *gradient_probe(cfg, model, task, data),
        best_epoch,
    ]
    if cfg.trainer.early_stopping_patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                mode="max" if cfg.task.direction == "maximize" else "min",
                patience=cfg.trainer.early_stopping_patience,
            )
        )
    callbacks += [AveragesOutlastStopping(weights) for weights in averaged]
    # Last, so that the epoch time it logs includes every other callback's work.
    epoch_logger = MlflowEpochLogger()
    return [*callbacks, epoch_logger], epoch_logger, best_epoch


def progress_verbosity(verbose: str | int) -> int:
    """`auto` is a live progress bar in a terminal and one line per epoch in a log file."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def sweep_trial_callbacks(
    cfg: DictConfig, trial: optuna.Trial, run_id: str
) -> list[keras.callbacks.Callback]:
    """Name the run in the trial (so a sweep can fail it if its process is killed) and, for
    a single-objective study (the only kind Optuna prunes), report to it every epoch."""
    trial.set_user_attr(names.TRIAL_RUN_ID, run_id)
    if len(trial.study.directions) != 1:
        return []
    monitor = f"val_{selection_metric(cfg.task)}"
    return [ReportToOptuna(trial, monitor, cfg.task.direction)]


def score_on_test_split(
    model: keras.Model, task, data: TaskData
) -> tuple[dict[str, float], dict[str, str]]:
    """The scores on the held-out split as `test_<name>` (Keras's metrics, then what
    `evaluate` cannot give: baselines, BLEU), and the task's text artifacts (sample outputs)."""
    test = model.evaluate(data.test, return_dict=True, verbose=0)
    metrics = {f"test_{name}": float(value) for name, value in test.items()}
    extra_metrics, artifacts = task.evaluate_extra(model, data)
    metrics.update({f"test_{name}": float(value) for name, value in extra_metrics.items()})
    return metrics, artifacts


def training_metrics(
    epoch_logger: MlflowEpochLogger, best_epoch: BestEpoch, train_size: int
) -> dict[str, float]:
    """How training went: the median epoch's time and throughput, the epochs trained, and
    which epoch's weights were tested."""
    epoch_seconds = statistics.median(epoch_logger.epoch_seconds)
    metrics = {
        "epoch_seconds": epoch_seconds,
        "samples_per_second": train_size / epoch_seconds,
        "epochs_trained": best_epoch.epochs_trained,
    }
    # What a sweep tunes on: the best validation score of any epoch (never the test
    # split), the epoch whose weights were tested.
    if best_epoch.best is not None and best_epoch.best_epoch is not None:  # set together
        metrics[f"best_{best_epoch.monitor}"] = best_epoch.best
        metrics["best_epoch"] = best_epoch.best_epoch
    metrics["tested_epoch"] = best_epoch.tested_epoch()
    return metrics


@dataclass(frozen=True)
class RunResult:
    """What a finished run gives its caller: the MLflow run that holds it, and its metrics
    (test scores, the validation's best, timing and size)."""

    run_id: str
    metrics: dict[str, float]


def run(
    cfg: DictConfig, trial: optuna.Trial | None = None, tags: dict[str, str] | None = None
) -> RunResult:
    """Train cfg.cell on cfg.task, test once on the held-out split, log it all to MLflow.

    `tags` are added to the run's own. Returns the run's id and final metrics. With an
    Optuna `trial` (from `rnnlab sweep`), val_<task.metric> is reported every epoch so the
    sweep can prune the run, which then raises optuna.TrialPruned.
    """
    configure_threads()  # only before TensorFlow's first op in this process
    freeze_long_lived_objects()
    forget_custom_gradients()  # else each run's traced graphs live as long as the process
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(cfg.trainer.precision)
    seed_everything(cfg.seed, cfg.reproducible)
    task, data = load_task(cfg.task, cfg.data_dir, cfg.trainer.batch_size, cfg.seed)
    cell_cfg = budgeted_cell(cfg, task)
    if cell_cfg is not cfg.cell:
        seed_everything(cfg.seed, cfg.reproducible)  # as if no width had been tried
    model = build_compiled_model(cfg, task, cell_cfg)
    callbacks, epoch_logger, best_epoch = training_callbacks(cfg, model, task, data)
    tags = {names.DATA_HASH: data.data_hash, **(tags or {})}
    if trial is not None:
        tags |= {names.OPTUNA_STUDY: trial.study.study_name, names.OPTUNA_TRIAL: str(trial.number)}
    with tracked_run(cfg, tags=tags) as active:
        if trial is not None:
            callbacks += sweep_trial_callbacks(cfg, trial, active.info.run_id)
        print(f"MLflow run {active.info.run_id} in experiment '{cfg.tracking.experiment}'")
        log_datasets(task.dataset_record(), data.data_hash)
        size = {**parameter_counts(model), "units": cell_cfg.units}
        mlflow.log_metrics(size)
        model.fit(
            data.train,
            validation_data=data.validation,
            epochs=cfg.trainer.epochs,
            callbacks=callbacks,
            verbose=progress_verbosity(cfg.trainer.verbose),
            shuffle=False,  # the training split shuffles itself, reproducibly from the seed
        )
        mlflow.set_tags(recurrence_tags(recurrent_layers(model)))
        metrics, artifacts = score_on_test_split(model, task, data)
        for file_name, text in artifacts.items():
            mlflow.log_text(text, file_name)
        metrics |= training_metrics(epoch_logger, best_epoch, data.train_size)
        mlflow.log_metrics(metrics)
        if cfg.tracking.log_model:
            log_stored_model(model, task, cfg, data)  # the weights just tested
        metrics |= size
    print(
        f"test {cfg.task.metric}: {metrics['test_' + cfg.task.metric]:.4f} "
        f"(weights of epoch {metrics['tested_epoch']} of {metrics['epochs_trained']}, "
        f"{metrics['n_params']:,} parameters)"
    )
    return RunResult(active.info.run_id, metrics)
