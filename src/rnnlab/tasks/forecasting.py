"""Forecasting: predict a statsmodels time series `horizon` steps ahead from a window.

The series ship as CSV files inside statsmodels (public domain). Each is split in time,
70/15/15, so the model is always tested on the future it never saw; a test window may
look back into the validation years, as a forecaster would. The model predicts the change
from the window's last value, so it starts out as the naive forecast and has to beat it:
the naive (last value) and, where the series has a season, the seasonal naive forecasts
are scored on the same test targets in the same run and logged beside the model's.

`task.source=file:PATH` forecasts a user's CSV or Parquet file instead (forecasting_files.py
reads it): each series split in time the same way, its value columns forecast together.
"""

from __future__ import annotations

import csv
import importlib.resources
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from keras import layers
from omegaconf import DictConfig

from rnnlab.config import ConfigError
from rnnlab.tasks import datasets
from rnnlab.tasks.base import DatasetRecord, TaskData, TaskDefaults, batched_task_data
from rnnlab.tasks.data_files import DataFile, is_file_source
from rnnlab.tasks.forecasting_files import SeriesRows, reading_settings

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.7, 0.15)  # train and validation; the rest, the latest part, is test


@dataclass(frozen=True)
class Series:
    file: str  # statsmodels/datasets/<file>
    description: str
    seasonal_period: int | None  # steps in one season; None where there is no fixed one


SERIES = {
    # The ~11-year solar cycle varies from 9 to 14 years: no fixed season to copy.
    "sunspots": Series("sunspots/sunspots.csv", "Yearly mean sunspot numbers, 1700-2008.", None),
    # Weekly: a year is 52 weeks (and a day), close enough for a seasonal naive forecast.
    "co2": Series(
        "co2/co2.csv", "Weekly CO2 at Mauna Loa, ppm, 1958-2001 (gaps interpolated).", 52
    ),
    "elec_equip": Series(
        "elec_equip/elec_equip.csv", "Monthly euro-area electrical equipment orders, 1996-2016.", 12
    ),
}


def read_series(path: Path) -> list[tuple[str, float | None]]:
    """Parse `time,value` rows after a header; an empty value is a gap (None)."""
    rows = []
    with path.open(encoding="utf-8", newline="") as lines:
        reader = csv.reader(lines)
        next(reader, None)
        for row in reader:
            try:
                time, value = row
                rows.append((time, float(value) if value.strip() else None))
            except ValueError:
                raise ValueError(
                    f"{path}:{reader.line_num}: expected 'time,value', got {','.join(row)[:60]!r}"
                ) from None
    if not rows:
        raise ValueError(f"{path}: no rows in the file")
    return rows


def fill_gaps(values: list[float | None]) -> np.ndarray:
    """Linearly interpolate missing values between observed neighbours (co2 has 59 gaps)."""
    series = np.array([math.nan if value is None else value for value in values], np.float64)
    observed = ~np.isnan(series)
    if not observed.any():
        raise ValueError("the series has no observed values")
    steps = np.arange(len(series))
    return np.interp(steps, steps[observed], series[observed])


def split_bounds(
    length: int, fractions: tuple[float, float] = SPLIT_FRACTIONS
) -> dict[str, tuple[int, int]]:
    """Contiguous [start, end) steps of each split, in time order."""
    train_end = int(fractions[0] * length)
    validation_end = train_end + int(fractions[1] * length)
    return {
        "train": (0, train_end),
        "validation": (train_end, validation_end),
        "test": (validation_end, length),
    }


def split_fractions(cfg: DictConfig) -> tuple[float, float]:
    """(train, validation) shares from the task's validation and test fractions; rounded so
    that 1 - 0.15 - 0.15 is the 0.7 the built-in series were split at."""
    validation = cfg.get("validation_fraction", SPLIT_FRACTIONS[1])
    test = cfg.get("test_fraction", 1 - sum(SPLIT_FRACTIONS))
    return round(1 - validation - test, 12), validation


@dataclass
class Windows:
    steps: np.ndarray  # the target's time step
    inputs: np.ndarray  # (examples, window, 1)
    targets: np.ndarray  # (examples,)

    def take(self, count: int | None) -> Windows:
        return Windows(self.steps[:count], self.inputs[:count], self.targets[:count])


def make_windows(values: np.ndarray, targets: range, window: int, horizon: int) -> Windows:
    """Inputs values[t-horizon-window+1 .. t-horizon] for each target step t."""
    first = window + horizon - 1
    steps = np.arange(max(targets.start, first), targets.stop, dtype=np.int64)
    if not len(steps):
        raise ConfigError(
            f"no target in steps {targets.start}-{targets.stop - 1} has {window + horizon - 1} "
            f"earlier steps: the series is too short for window={window}, horizon={horizon}"
        )
    inputs = window_inputs(values, steps, window, horizon)
    return Windows(steps, inputs[..., np.newaxis].astype(np.float32), values[steps])


def window_inputs(values: np.ndarray, steps: np.ndarray, window: int, horizon: int) -> np.ndarray:
    """values[t-horizon-window+1 .. t-horizon] for each target step t, in one gather."""
    return values[(steps - horizon - window + 1)[:, np.newaxis] + np.arange(window)]


def series_windows(
    rows: SeriesRows, fractions: tuple[float, float], window: int, horizon: int
) -> dict[str, Windows]:
    """Each split's windows of every series of a file, in time order within each series:
    every series is split in time as one built-in series is, and no window crosses two."""
    lengths = rows.lengths
    train_end = (fractions[0] * lengths).astype(np.int64)
    validation_end = train_end + (fractions[1] * lengths).astype(np.int64)
    bounds = {
        "train": (np.zeros_like(lengths), train_end),
        "validation": (train_end, validation_end),
        "test": (validation_end, lengths),
    }
    first = window + horizon - 1
    windows = {}
    for split, (start, end) in bounds.items():
        start = np.maximum(start, first)
        counts = np.maximum(end - start, 0)
        if not counts.sum():
            raise ConfigError(
                f"no target of the {split} split has {first} earlier steps in its series: "
                f"the series are too short for window={window}, horizon={horizon}"
            )
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        steps = np.repeat(rows.starts + start, counts) + within
        inputs = window_inputs(rows.values, steps, window, horizon).astype(np.float32)
        targets = rows.values[steps]
        if targets.shape[1] == 1:  # one value column: shaped as a built-in series is
            targets = targets[:, 0]
        windows[split] = Windows(steps, inputs, targets)
    return windows


class StatsmodelsSeries(tfds.core.GeneratorBasedBuilder):
    """One config per series: one record per time step, split in time order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Chronological 70/15/15 split; co2 gaps interpolated."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Installed with statsmodels: run `make install`."
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=name, description=series.description)
        for name, series in SERIES.items()
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Time series shipped with statsmodels, one record per step.",
            features=tfds.features.FeaturesDict(
                {
                    "step": np.int64,
                    "time": tfds.features.Text(),
                    "value": np.float64,
                    "observed": np.bool_,  # False where the value was interpolated
                }
            ),
            homepage="https://www.statsmodels.org/stable/datasets/index.html",
            citation="Seabold, S. & Perktold, J. (2010). statsmodels: Econometric and "
            "statistical modeling with python. Proceedings of the 9th Python in Science Conf.",
            license="Public domain",
        )

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[int, dict]]]:
        path = Path(dl_manager.manual_dir) / SERIES[self.builder_config.name].file
        rows = read_series(path)
        values = fill_gaps([value for _, value in rows])
        return {
            split: self._generate_examples(rows, values, range(start, end))
            for split, (start, end) in split_bounds(len(rows)).items()
        }

    def _generate_examples(
        self, rows: list[tuple[str, float | None]], values: np.ndarray, steps: range
    ) -> Iterator[tuple[int, dict]]:
        for step in steps:
            time, observed = rows[step]
            yield (
                step,
                {
                    "step": step,
                    "time": time,
                    "value": values[step],
                    "observed": observed is not None,
                },
            )


class ForecastingTask(TaskDefaults):
    """Regression of the next value: recurrent stack over a window, one linear output."""

    loss = "mse"

    def __init__(self, cfg: DictConfig, data_dir: str) -> None:
        if cfg.series not in SERIES:
            raise ConfigError(f"unknown task.series '{cfg.series}'; known: {', '.join(SERIES)}")
        self.cfg = cfg
        self.root = datasets.data_root(data_dir)
        self.data_dir = data_dir
        self.builder = StatsmodelsSeries(config=cfg.series, data_dir=str(self.root / "tfds"))
        self.values = np.zeros(0)
        self.scale: tuple[float, float] | tuple[np.ndarray, np.ndarray] = (0.0, 1.0)
        self.test_windows: Windows | None = None
        # A user's file (read by load): the file, its rows, and the columns forecast.
        self.file: DataFile | None = None
        self.rows: SeriesRows | None = None
        self.value_columns: list[str] = ["value"]

    @property
    def from_file(self) -> bool:
        return is_file_source(self.cfg.get("source", "embedded"))

    @property
    def metrics(self) -> list:
        return ["mae", keras.metrics.RootMeanSquaredError(name="rmse")]

    def prepare(self) -> None:
        """The CSV files are inside the installed statsmodels: no fetch, just a build."""
        source = Path(str(importlib.resources.files("statsmodels") / "datasets"))
        for name in SERIES:
            builder = StatsmodelsSeries(config=name, data_dir=str(self.root / "tfds"))
            datasets.prepare(builder, source)

    def series(self) -> np.ndarray:
        """The whole prepared series, in time order."""
        datasets.require_prepared(self.builder)
        parts = [tfds.as_numpy(self.builder.as_dataset(split=split)) for split in SPLITS]
        records = sorted((int(r["step"]), float(r["value"])) for part in parts for r in part)
        return np.array([value for _, value in records])

    def load(self, batch_size: int, seed: int) -> TaskData:
        if self.from_file:
            return self.load_file(batch_size, seed)
        self.values = self.series()
        bounds = split_bounds(len(self.values), split_fractions(self.cfg))
        windows = {
            split: make_windows(self.values, range(start, end), self.cfg.window, self.cfg.horizon)
            for split, (start, end) in bounds.items()
        }
        windows = {split: part.take(self.cfg.max_examples) for split, part in windows.items()}
        train_values = self.values[: bounds["train"][1]]
        # Inputs are standardised with training statistics only: the future stays unseen.
        self.scale = (float(train_values.mean()), float(train_values.std()))
        self.test_windows = windows["test"]
        splits = {
            name: tf.data.Dataset.from_tensor_slices((part.inputs, part.targets.astype(np.float32)))
            for name, part in windows.items()
        }
        return batched_task_data(splits, batch_size, seed, datasets.content_hash(self.builder))

    def load_file(self, batch_size: int, seed: int) -> TaskData:
        """A user's file, read and checked once per content and columns, then cached."""
        from rnnlab.tasks.forecasting_files import prepared

        self.file, rows = prepared(self.cfg, self.data_dir)
        self.rows = rows
        self.value_columns = rows.columns
        self.values = rows.values if len(rows.columns) > 1 else rows.values[:, 0]
        fractions = split_fractions(self.cfg)
        windows = series_windows(rows, fractions, self.cfg.window, self.cfg.horizon)
        windows = {split: part.take(self.cfg.max_examples) for split, part in windows.items()}
        # Inputs are standardised with training statistics only: each series's first part.
        position = np.arange(len(rows.values)) - np.repeat(rows.starts, rows.lengths)
        train_rows = position < np.repeat((fractions[0] * rows.lengths).astype(int), rows.lengths)
        mean, std = rows.values[train_rows].mean(axis=0), rows.values[train_rows].std(axis=0)
        std = np.where(std > 0, std, 1.0)  # a constant column: changes in its own units
        self.scale = (float(mean[0]), float(std[0])) if len(mean) == 1 else (mean, std)
        self.test_windows = windows["test"]
        splits = {
            name: tf.data.Dataset.from_tensor_slices((part.inputs, part.targets.astype(np.float32)))
            for name, part in windows.items()
        }
        # The run's data: the file's content and every setting that shapes its windows.
        settings = reading_settings(self.cfg) | {
            "window": self.cfg.window,
            "horizon": self.cfg.horizon,
            "validation_fraction": self.cfg.validation_fraction,
            "test_fraction": self.cfg.test_fraction,
        }
        return batched_task_data(splits, batch_size, seed, self.file.data_hash(settings))

    def build_model(
        self, recurrent: Callable[[keras.KerasTensor], keras.KerasTensor]
    ) -> keras.Model:
        mean, std = self.scale
        channels = len(self.value_columns)  # a file's value columns are forecast together
        window = keras.Input(shape=(self.cfg.window, channels), name="window")
        # Standardised inputs keep the cell in its working range whatever the series' units.
        standardised = layers.Normalization(mean=mean, variance=std**2, name="standardise")(window)
        summary = recurrent(standardised)
        # The model predicts the change from the last value, in units of the series' spread.
        change = layers.Dense(channels, kernel_initializer="zeros", name="change")(summary)
        if channels == 1:
            forecast = window[:, -1, 0] + std * change[:, 0]
        else:
            forecast = window[:, -1, :] + change * np.asarray(std, dtype=np.float32)
        return keras.Model(window, forecast, name="forecasting")

    def evaluate_extra(
        self, model: keras.Model, data: TaskData
    ) -> tuple[dict[str, float], dict[str, str]]:
        """Naive and seasonal naive forecasts of the same test targets, from the full series."""
        test = self.test_windows
        if test is None:
            raise ValueError("forecasting's test windows are made by load: call it first")
        steps, targets = test.steps, test.targets
        forecasts = {"naive": self.values[steps - self.cfg.horizon]}
        period = None if self.from_file else SERIES[self.cfg.series].seasonal_period
        if period is not None:
            # The same season one (or more) periods back, never later than the last seen step.
            back = period * math.ceil(self.cfg.horizon / period)
            forecasts["seasonal_naive"] = self.values[steps - back]
        metrics = {}
        for name, forecast in forecasts.items():
            metrics[f"{name}_mae"] = float(np.mean(np.abs(forecast - targets)))
            metrics[f"{name}_rmse"] = float(np.sqrt(np.mean((forecast - targets) ** 2)))
        metrics["baseline_mae"] = metrics["naive_mae"]  # the floor a report compares cells with
        predicted = model.predict(test.inputs, verbose=0)
        if self.rows is not None:
            return metrics, {"test_forecasts.csv": self.forecast_table(predicted, forecasts)}
        table = ["step,target,forecast,naive"] + [
            f"{step},{target:.4f},{forecast:.4f},{naive:.4f}"
            for step, target, forecast, naive in zip(
                steps, targets, predicted, forecasts["naive"], strict=True
            )
        ]
        return metrics, {"test_forecasts.csv": "\n".join(table) + "\n"}

    def forecast_table(self, predicted: np.ndarray, forecasts: dict[str, np.ndarray]) -> str:
        """A file's test forecasts as CSV: each target's series, time and column, then the
        target, the model's forecast and the naive one."""
        import pandas as pd

        rows, test = self.rows, self.test_windows
        assert rows is not None and test is not None  # load made both
        channels = len(rows.columns)
        series = np.searchsorted(rows.starts, test.steps, side="right") - 1
        table = pd.DataFrame(
            {
                "series": np.repeat(rows.ids[series], channels),
                "time": np.repeat(rows.times[test.steps], channels),
                "column": np.tile(rows.columns, len(test.steps)),
                "target": np.reshape(test.targets, -1),
                "forecast": np.reshape(predicted, -1),
                "naive": np.reshape(forecasts["naive"], -1),
            }
        )
        return table.to_csv(index=False, float_format="%.4f")

    def input_state(self) -> dict[str, Any]:
        """A file's value columns: `rnnlab predict` reads them from a CSV file."""
        return {"value_columns": self.value_columns} if self.from_file else {}

    def restore_inputs(self, state: dict[str, Any]) -> None:
        self.value_columns = state.get("value_columns", self.value_columns)

    def predict(self, model: keras.Model, inputs: list[str]) -> list[float]:
        """The value `horizon` steps after the last of the inputs: numbers, oldest first, or
        one CSV file of `time,value` rows like the series' own (gaps interpolated). A model
        of a user's file reads its value columns from a CSV or Parquet file of that form,
        and forecasts each."""
        given_file = len(inputs) == 1 and isinstance(inputs[0], str) and Path(inputs[0]).is_file()
        if self.from_file and (given_file or len(self.value_columns) > 1):
            return self.predict_from_table(model, inputs)
        if given_file:
            values = fill_gaps([value for _, value in read_series(Path(inputs[0]))])
        else:
            try:
                values = np.array([float(value) for value in inputs])
            except ValueError as error:
                raise ConfigError(f"forecasting takes numbers or one CSV file: {error}") from None
        if len(values) < self.cfg.window:
            raise ConfigError(
                f"forecasting needs the last {self.cfg.window} values (task.window), "
                f"got {len(values)}"
            )
        window = values[-self.cfg.window :].astype(np.float32)[np.newaxis, :, np.newaxis]
        return [float(model.predict(window, verbose=0)[0])]

    def predict_from_table(self, model: keras.Model, inputs: list[str]) -> list[float]:
        """The forecast of each value column after the last rows of one series in a file."""
        from rnnlab.tasks.forecasting_files import FORMATS, read_series_rows

        if len(inputs) != 1:
            raise ConfigError(
                f"this model forecasts {', '.join(self.value_columns)}: give one CSV or "
                "Parquet file of their latest rows"
            )
        file = DataFile.from_source(f"file:{inputs[0]}", FORMATS)
        id_column = self.cfg.id_column
        rows = read_series_rows(
            file,
            self.cfg.time_column,
            self.value_columns,
            id_column,
            self.cfg.nonfinite,
            id_optional=True,  # one series needs no id
        )
        if len(rows.lengths) > 1:
            raise file.fail(f"{len(rows.lengths)} series (by {id_column}): give one at a time")
        if len(rows.values) < self.cfg.window:
            raise file.fail(
                f"forecasting needs the last {self.cfg.window} rows (task.window), "
                f"got {len(rows.values)}"
            )
        window = rows.values[-self.cfg.window :].astype(np.float32)[np.newaxis]
        return np.reshape(model.predict(window, verbose=0)[0], -1).astype(float).tolist()

    def predict_example(self) -> list[float] | None:
        if self.from_file and len(self.value_columns) > 1:
            return None  # several columns are no list of numbers: the stored model takes arrays
        return [float(value) for value in self.values[-self.cfg.window :]]  # the latest window

    def prediction_lines(self, inputs: list[str], answers: list[float]) -> list[str]:
        steps = f"{self.cfg.horizon} step{'s' if self.cfg.horizon > 1 else ''}"
        if len(answers) > 1:
            named = ", ".join(
                f"{column} {answer:.4f}"
                for column, answer in zip(self.value_columns, answers, strict=True)
            )
            return [f"{named}  ({steps} after the last row given)"]
        return [f"{answers[0]:.4f}  ({steps} after the last value given)"]

    def dataset_record(self) -> DatasetRecord:
        if self.file is not None and self.rows is not None:
            return self.file.record(self.rows.rows)
        return super().dataset_record()
