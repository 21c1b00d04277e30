"""Keras callbacks that record training in MLflow and stop it when the loss breaks."""

from __future__ import annotations

import math
import time

import keras
import mlflow


class NonFiniteLossError(ArithmeticError):
    """The training loss became NaN or infinite; the message says when."""


class MlflowEpochLogger(keras.callbacks.Callback):
    """Log every epoch's Keras metrics and wall time to the active MLflow run."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch_seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._started)
        metrics = {name: float(value) for name, value in (logs or {}).items()}
        mlflow.log_metrics(metrics, step=epoch)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Fail the run with a clear reason as soon as a batch's loss is NaN or infinite."""

    def __init__(self) -> None:
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise NonFiniteLossError(
                f"loss became {float(loss)} at epoch {self._epoch + 1}, batch {batch + 1}: "
                "lower optimizer.learning_rate or set trainer.clipnorm"
            )
