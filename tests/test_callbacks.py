"""The callbacks that choose a run's epoch: reports to Optuna (steps count epochs, each
reports the best score so far, pruning stops the run) and the best epoch's weights."""

from __future__ import annotations

import math

import keras
import numpy as np
import optuna
import pytest

from rnnlab.training.callbacks import (
    AveragedWeights,
    AveragesOutlastStopping,
    BestEpoch,
    ReportToOptuna,
)


def trial_with(pruner: optuna.pruners.BasePruner) -> optuna.Trial:
    return optuna.create_study(direction="maximize", pruner=pruner).ask()


def test_steps_count_epochs_trained_and_a_pruned_trial_says_after_which():
    # Prunes any value below 0.5 from the second epoch on (warm-up: the first is spared).
    trial = trial_with(optuna.pruners.ThresholdPruner(lower=0.5, n_warmup_steps=2))
    report = ReportToOptuna(trial, monitor="val_accuracy")
    report.on_epoch_end(0, {"val_accuracy": 0.4, "val_loss": 1.0})  # epoch 1: warm-up
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 2"):
        report.on_epoch_end(1, {"val_accuracy": 0.3})
    assert trial.study.get_trials()[0].intermediate_values == {1: 0.4, 2: 0.4}  # best so far


def reported(direction: str, values: list[float]) -> list[float]:
    trial = optuna.create_study(direction=direction).ask()
    report = ReportToOptuna(trial, "val_loss", direction)
    for epoch, value in enumerate(values):
        report.on_epoch_end(epoch, {"val_loss": value})
    return list(trial.study.get_trials()[0].intermediate_values.values())


def test_each_epoch_reports_the_best_score_so_far_as_the_trial_will_be_scored():
    # A model that overfits after its first epoch keeps the score it will end with.
    assert reported("maximize", [0.78, 0.74, 0.80, 0.79]) == [0.78, 0.78, 0.80, 0.80]
    assert reported("minimize", [0.5, 0.6, 0.4, 0.45]) == [0.5, 0.5, 0.4, 0.4]


def test_a_nan_score_is_reported_as_it_is_so_the_pruner_can_prune_it():
    values = reported("maximize", [0.7, float("nan"), 0.75])
    assert values[0] == 0.7 and math.isnan(values[1]) and values[2] == 0.75


def test_a_metric_the_epoch_does_not_log_is_named_with_those_it_does():
    report = ReportToOptuna(trial_with(optuna.pruners.NopPruner()), monitor="val_acc")
    with pytest.raises(KeyError, match="val_acc is not among this epoch's: loss, val_accuracy"):
        report.on_epoch_end(0, {"loss": 0.7, "val_accuracy": 0.5})


def test_the_last_epoch_completes_the_trial_whatever_the_pruner_says():
    def train(epochs: int) -> None:
        # Prunes any value below 0.9 from the second epoch on.
        trial = trial_with(optuna.pruners.ThresholdPruner(lower=0.9, n_warmup_steps=2))
        report = ReportToOptuna(trial, monitor="val_accuracy")
        report.set_params({"epochs": epochs, "verbose": 0})
        for epoch in range(epochs):
            report.on_epoch_end(epoch, {"val_accuracy": 0.5})

    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 2"):
        train(epochs=3)
    train(epochs=2)  # no TrialPruned: epoch 2 spent the budget, so the trial is complete


def epochs_of_weights(best: BestEpoch, scores: list[float]) -> keras.Model:
    """Train `best` by hand: epoch i sets the model's only weight to i, then scores it."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    best.set_model(model)
    best.on_train_begin()
    for epoch, score in enumerate(scores):
        model.set_weights([np.full((1, 1), epoch + 1.0)])
        best.on_epoch_end(epoch, {"val_accuracy": score, "val_loss": -score})
    best.on_train_end()
    return model


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([0.5, 0.8, 0.7, 0.6], 2),  # the peak, not the last epoch
        ([0.5, 0.8, 0.8, 0.6], 2),  # a tie keeps the earlier epoch
        ([0.5, math.nan, 0.7], 3),  # NaN never wins
        ([0.5, 0.6, 0.9], 3),  # the last epoch, already in place
    ],
)
def test_best_epoch_restores_the_weights_of_the_best_validation_score(scores, expected):
    best = BestEpoch("val_accuracy", "maximize")
    model = epochs_of_weights(best, scores)
    assert best.best_epoch == best.tested_epoch() == expected
    assert model.get_weights()[0][0, 0] == expected
    assert best.epochs_trained == len(scores)


def test_best_epoch_follows_the_direction_and_can_leave_the_last_weights():
    lowest = BestEpoch("val_loss", "minimize")
    assert epochs_of_weights(lowest, [0.5, 0.9, 0.7]).get_weights()[0][0, 0] == 2
    kept = BestEpoch("val_accuracy", "maximize", restore=False)
    assert epochs_of_weights(kept, [0.5, 0.9, 0.7]).get_weights()[0][0, 0] == 3
    assert kept.best_epoch == 2 and kept.tested_epoch() == 3


class StopAfter(keras.callbacks.Callback):
    """Early stopping's effect, at a chosen epoch."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.model.stop_training = epoch + 1 >= self.epochs


def test_averaging_the_weights_leaves_the_training_untouched():
    """Validating the average swaps it in and out every epoch; the raw weights must come
    back bit for bit, so a run's training losses are the ones it has without the average."""
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(256, 8)).astype("float32")
    targets = np.sin(3 * inputs).sum(axis=1, keepdims=True)

    def training_losses(use_ema: bool) -> list[float]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(32, activation="tanh"), keras.layers.Dense(1)]
        )
        model.compile(keras.optimizers.SGD(0.1, use_ema=use_ema, ema_momentum=0.5), loss="mse")
        history = model.fit(
            inputs,
            targets,
            batch_size=32,
            epochs=8,
            verbose=0,
            shuffle=False,
            validation_data=(inputs, targets),
            callbacks=[AveragedWeights()] if use_ema else [],
        )
        return history.history["loss"]

    plain, averaged = training_losses(False), training_losses(True)
    assert averaged == plain


@pytest.mark.parametrize(
    ("stop_after", "direction", "tested_epoch"),
    [
        (6, "minimize", 6),  # every planned epoch: the loss falls, so the last is best
        (3, "minimize", 3),  # stopped early on its best epoch, which is the last
        (3, "maximize", 1),  # choosing the highest loss restores the first epoch
    ],
)
def test_the_tested_model_is_the_average_that_validation_chose(stop_after, direction, tested_epoch):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(256, 4)).astype("float32")
    targets = inputs.sum(axis=1, keepdims=True)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.9), loss="mse")
    averaged = AveragedWeights()
    best = BestEpoch("val_loss", direction)
    callbacks = [averaged, best, StopAfter(stop_after), AveragesOutlastStopping(averaged)]
    history = model.fit(
        inputs,
        targets,
        batch_size=32,
        epochs=6,
        verbose=0,
        validation_data=(inputs, targets),
        callbacks=callbacks,
    )
    val_losses = history.history["val_loss"]
    assert best.tested_epoch() == tested_epoch and len(val_losses) == stop_after
    assert len(set(val_losses)) == len(val_losses), "every epoch's average must differ"
    tested_loss = model.evaluate(inputs, targets, verbose=0)
    assert tested_loss == pytest.approx(val_losses[tested_epoch - 1], rel=1e-5)
