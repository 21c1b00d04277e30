"""Keras callbacks that record training in MLflow and stop it when the loss breaks."""

from __future__ import annotations

import logging
import math
import time

import keras
import mlflow
import optuna

from rnnlab.interrupts import raise_if_stopping
from rnnlab.records import decay, names
from rnnlab.records.plots import gradient_decay_figure
from rnnlab.training.probe import ProbeResult, decay_statistics


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
        # Written now: a write costs milliseconds, while MLflow's asynchronous queue made the
        # run's end wait about 0.9 s for its shutdown (benchmarks/RESULTS.md, sweeps).
        mlflow.log_metrics(metrics, step=epoch)


class StopWhenAsked(keras.callbacks.Callback):
    """End training after the batch in which a stop signal arrived, even if what the signal
    raised was swallowed on the way (rnnlab.interrupts)."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        raise_if_stopping()

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        raise_if_stopping()


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


class BestEpoch(keras.callbacks.Callback):
    """Remember the epoch whose validation score was best, and test its weights, not the last.

    The monitor is what a sweep scores a trial by (`val_<task.metric>`), so a trial's value
    and its test score describe one model. Keras's EarlyStopping restores weights only when
    it runs at all, which sweeps with early stopping off and `patience: null` never did:
    their test scores came from the last epoch, often an overfit one.
    A tie keeps the earlier epoch; a NaN score never wins.
    """

    def __init__(self, monitor: str, direction: str = "maximize", restore: bool = True) -> None:
        super().__init__()
        self.monitor = monitor
        self.better = (lambda a, b: a > b) if direction == "maximize" else (lambda a, b: a < b)
        self.restore = restore
        self.best: float | None = None
        self.best_epoch: int | None = None  # counted from 1, as the progress bar counts
        self.epochs_trained = 0
        self._weights: list | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best, self.best_epoch, self.epochs_trained, self._weights = None, None, 0, None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs_trained = epoch + 1
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        if self.best is None or self.better(float(value), self.best):
            self.best, self.best_epoch = float(value), epoch + 1
            if self.restore:
                self._weights = self.model.get_weights()

    def on_train_end(self, logs: dict | None = None) -> None:
        # The last epoch's weights are already in place when it was the best one.
        if self._weights is not None and self.best_epoch != self.epochs_trained:
            self.model.set_weights(self._weights)
        self._weights = None

    def tested_epoch(self) -> int:
        """The epoch whose weights the model holds after training."""
        if self.restore and self.best_epoch is not None:
            return self.best_epoch
        return self.epochs_trained


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Validate, keep and test the optimizer's moving average of the weights (Polyak).

    Swapped in at each epoch's end, so that callbacks after this one (BestEpoch first)
    see the average: the epoch that validation chooses is an averaged model, and so is
    the model that is tested. Needs an optimizer compiled with `use_ema=True`.
    """

    def __init__(self) -> None:
        super().__init__(swap_on_epoch=True)

    def _tf_swap_variables(self, optimizer) -> None:
        """Swap through a copy, as Keras does on its other backends.

        Keras's TensorFlow swap saves a copy with a += b; b = a - b; a -= b, which rounds:
        every epoch's four swaps nudged the raw weights, so averaging changed the training it
        only meant to evaluate, and a chaotic run took another path. With the copy, a run
        trains exactly as it would without the average.
        """
        self._backend_swap_variables(optimizer)


class AveragesOutlastStopping(keras.callbacks.Callback):
    """Keep the averaged weights in the model when a run stops before its last epoch.

    `fit` ends by copying the optimizer's average slots into the model. After
    AveragedWeights' swap those slots hold the raw weights, and Keras makes them hold the
    average again only after the last planned epoch: a run that early stopping ends would
    be tested on its raw weights. Placed after every callback that may stop training,
    this makes the slots hold the average when one has.
    """

    def __init__(self, averaged: AveragedWeights) -> None:
        super().__init__()
        self.averaged = averaged

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.model.stop_training:
            self.averaged._finalize_ema_values()


class ReportToOptuna(keras.callbacks.Callback):
    """Report the best `monitor` so far to a sweep's trial after every epoch; prune when told.

    The best so far, not the epoch's own value, because that is what the trial will score
    (`best_val_<metric>`): on a task that overfits after an epoch or two, raw values fall
    and a pruner would cut the fast learners that already hold the best scores.
    The step is the number of epochs trained (1 after the first), so a pruner's resource
    counts epochs: successive halving with min_resource 1 and reduction factor 4 judges
    trials after 1 and 4 epochs, as sentiment_cells says.
    """

    def __init__(self, trial: optuna.Trial, monitor: str, direction: str = "maximize") -> None:
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.better = max if direction == "maximize" else min
        self.best: float | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(
                f"the sweep's metric {self.monitor} is not among this epoch's: "
                f"{', '.join(sorted(logs))}"
            )
        value = float(logs[self.monitor])
        if math.isfinite(value):  # a NaN is reported as it is: pruners prune it
            self.best = value if self.best is None else self.better(self.best, value)
            value = self.best
        self.trial.report(value, step=epoch + 1)
        # After the last epoch pruning saves nothing and would lose a finished trial's score
        # (successive halving's rung at 9 epochs falls there when the budget is 9).
        last_epoch = epoch + 1 == (self.params or {}).get("epochs")
        if not last_epoch and self.trial.should_prune():
            raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch + 1}.")


class GradientDecayLogger(keras.callbacks.Callback):
    """Probe dL/dh_t every few epochs and log the decay metrics, curves and plots to MLflow.

    The headline metrics (`grad_decay_log10_ratio`, `grad_decay_half_life`) describe the
    hidden state of the last probed layer; other states (the LSTM's `c`) get a suffix and
    other layers a `<layer>.` prefix. Weight-gradient norms come from the same batch.
    Metrics and curves are logged as each probe finishes, so a crash loses none; the PNG
    plots, which take longer to render than the probe to measure, are drawn when training ends.
    """

    def __init__(
        self, probe, batch, every_n_epochs: int, explode_norm: float, plots: bool = True
    ) -> None:
        super().__init__()
        self.plots = plots
        self.probe = probe
        self.batch = batch
        self.every_n_epochs = every_n_epochs
        self.explode_norm = explode_norm
        self.results: dict[int, ProbeResult] = {}  # epoch (from 1; 0 at initialisation)

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Probe the untrained model once: where each cell starts, before training moves it.

        Its metrics carry the suffix `_at_init`; its curves are epoch 0's.
        """
        self._probe(0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs == 0:
            self._probe(epoch + 1)

    def _probe(self, epoch: int) -> None:
        result = self.probe.measure(*self.batch)
        self.results[epoch] = result
        if epoch == 0:
            mlflow.log_metrics(
                {f"{name}_at_init": value for name, value in self.metrics(result).items()}
            )
        else:
            mlflow.log_metrics(self.metrics(result), step=epoch - 1)
        curves = {
            layer: {state: norms.tolist() for state, norms in states.items()}
            for layer, states in result.step_norms.items()
        }
        decay.write(decay.DecayCurves(epoch, result.loss, curves))
        if result.weight_norms["global"] > self.explode_norm:
            when = f"epoch {epoch}" if epoch else "initialisation"
            clipnorm = getattr(self.model.optimizer, "clipnorm", None)
            advice = (
                f"the updates are clipped to norm {clipnorm:g} (trainer.clipnorm)"
                if clipnorm
                else "consider trainer.clipnorm"
            )
            warning = (
                f"gradient norm {result.weight_norms['global']:.3g} at {when} passed "
                f"probe.explode_norm={self.explode_norm:g}: {advice}"
            )
            logging.getLogger("rnnlab").warning(warning)
            mlflow.set_tag(names.GRADIENTS_EXPLODED, warning)

    def metrics(self, result: ProbeResult) -> dict[str, float]:
        metrics = {f"grad_norm.{owner}": norm for owner, norm in result.weight_norms.items()}
        headline = self.probe.layers[-1].name
        for layer, states in result.step_norms.items():
            prefixes = [""] if layer == headline else []
            if len(result.step_norms) > 1:
                prefixes.append(f"{layer}.")
            for state, norms in states.items():
                suffix = "" if state == "h" else f"_{state}"
                for statistic, value in decay_statistics(norms).items():
                    for prefix in prefixes:
                        metrics[f"{prefix}grad_decay_{statistic}{suffix}"] = value
        return metrics

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.plots:
            return
        for epoch, result in self.results.items():
            curves = {
                f"{layer} {state}": norms
                for layer, states in result.step_norms.items()
                for state, norms in states.items()
            }
            when = f"epoch {epoch}" if epoch else "initialisation"
            figure = gradient_decay_figure(curves, f"Gradient decay, {when}")
            mlflow.log_figure(figure, decay.figure_path(epoch))
        if self.results:
            headline = self.probe.layers[-1].name
            drawn = decay.probes_to_draw(list(self.results))
            curves = {}
            for epoch in drawn:
                label = f"epoch {epoch}" if epoch else "at init"
                curves[label] = self.results[epoch].step_norms[headline]["h"]
            probes = len(self.results)
            which = "all probes" if len(drawn) == probes else f"{len(drawn)} of {probes} probes"
            title = f"Gradient decay of {headline}, {which}"
            mlflow.log_figure(gradient_decay_figure(curves, title), decay.ALL_EPOCHS_FIGURE)
