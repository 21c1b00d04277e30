"""A user's time series file (`task=forecasting task.source=file:PATH`), read into one
array of rows, series after series, each in time order, and checked on the way in.

A CSV or Parquet table: a time column (`task.time_column`), one or more value columns
(`task.value_columns`; by default every other column), and optionally an id column
(`task.id_column`) when the file holds several series. The value columns are forecast
together, as channels of one series; several ids are several series of those columns.
Everything is vectorised over rows: series are grouped by one sort on (id, time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnlab.tasks.data_files import (
    DataFile,
    cache_path,
    load_cached,
    quoted,
    read_table,
    require_columns,
    save_cached,
)

if TYPE_CHECKING:  # pandas loads with the file, not with the task
    import pandas as pd

FORMATS = ("csv", "parquet")
NONFINITE = ("fail", "drop", "interpolate")  # a NaN or an empty value: what the task does
# The version of a file's prepared rows: raise it when reading them changes, so that no
# cache of the old way is read.
PREPARED_VERSION = 1


@dataclass
class SeriesRows:
    """Every series of the file, rows series after series, each in time order."""

    values: np.ndarray  # (rows, channels) float64
    starts: np.ndarray  # (series,) the first row of each series
    lengths: np.ndarray  # (series,) its rows
    times: np.ndarray  # (rows,) each row's time: numbers or datetime64
    ids: np.ndarray  # (series,) each series's id; its index where the file has one series
    columns: list[str]  # the value columns, one per channel
    rows: int  # the file's rows

    def arrays(self) -> dict[str, np.ndarray]:
        """As arrays for the cache (`from_arrays` reads them back)."""
        return {
            "values": self.values,
            "starts": self.starts,
            "lengths": self.lengths,
            "times": self.times,
            "ids": self.ids,
            "columns": np.array(self.columns),
            "rows": np.array(self.rows),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SeriesRows:
        return cls(
            arrays["values"],
            arrays["starts"],
            arrays["lengths"],
            arrays["times"],
            arrays["ids"],
            [str(column) for column in arrays["columns"]],
            int(arrays["rows"]),
        )


def reading_settings(task_cfg: Any) -> dict[str, Any]:
    """The task's settings that decide what is read from the file."""
    columns = task_cfg.value_columns
    return {
        "time_column": task_cfg.time_column,
        "value_columns": None if columns is None else list(columns),
        "id_column": task_cfg.id_column,
        "nonfinite": task_cfg.nonfinite,
    }


def prepared(task_cfg: Any, data_dir: str) -> tuple[DataFile, SeriesRows]:
    """The file `task.source` names and its series: from the cache when this content was
    read with these settings before, else read, checked and cached. Needs no TensorFlow,
    so `rnnlab train` checks a file before loading it."""
    file = DataFile.from_source(task_cfg.source, FORMATS)
    reading = reading_settings(task_cfg)
    cache = cache_path(data_dir, "forecasting", f"{file.data_hash(reading)}-{PREPARED_VERSION}")
    arrays = load_cached(cache)
    if arrays is None:
        arrays = read_series_rows(file, **reading).arrays()
        save_cached(cache, arrays)
    return file, SeriesRows.from_arrays(arrays)


def column_settings(time_column: str, id_column: str | None) -> dict[str, str]:
    return {time_column: "task.time_column"} | ({id_column: "task.id_column"} if id_column else {})


def read_series_rows(
    file: DataFile,
    time_column: str,
    value_columns: list[str] | None,
    id_column: str | None,
    nonfinite: str,
    id_optional: bool = False,
) -> SeriesRows:
    """The file's series, sorted and checked: one line names the file and row or column of
    a missing column, a value that is not a number, a repeated time or a gap it cannot fill.
    With `id_optional`, a file without the id column is one series (`rnnlab predict`'s)."""
    import pandas as pd

    table = read_table(file, ())
    if id_optional and id_column not in table.columns:
        id_column = None
    settings = column_settings(time_column, id_column)
    require_columns(
        file,
        table.columns,
        [*settings, *(value_columns or [])],
        lambda column: f"name it with {settings.get(column, 'task.value_columns')}",
    )
    if value_columns is None:
        value_columns = [str(column) for column in table.columns if column not in settings]
        if not value_columns:
            raise file.fail(f"no value column beside '{time_column}': add one to forecast")
    for column in value_columns:
        if not pd.api.types.is_numeric_dtype(table[column]):
            numbers = pd.to_numeric(table[column], errors="coerce")
            row = int(np.flatnonzero(numbers.isna() & table[column].notna())[0])
            raise file.fail(
                f"{file.row(row)}, column '{column}': {quoted(table[column].iloc[row])} is not a "
                "number; list the columns to forecast in task.value_columns"
            )
    for column in settings:
        missing = np.flatnonzero(table[column].isna().to_numpy())
        if len(missing):
            raise file.fail(f"{file.row(int(missing[0]))}, column '{column}': empty")
    times = time_values(file, table[time_column])
    if id_column:
        codes, ids = pd.factorize(table[id_column])
        ids = np.asarray(ids)
        if ids.dtype == object:
            ids = ids.astype(str)
    else:
        codes, ids = np.zeros(len(table), dtype=np.int64), np.array([0])
    order = np.lexsort((times, codes))
    codes, times = codes[order], times[order]
    repeated = np.flatnonzero((codes[1:] == codes[:-1]) & (times[1:] == times[:-1]))
    if len(repeated):
        row = int(order[repeated[0] + 1])
        which = f" of series {quoted(ids[codes[repeated[0]]])}" if id_column else ""
        raise file.fail(f"{file.row(row)}: time {times[repeated[0]]}{which} is there twice")
    values = table[value_columns].to_numpy(dtype=np.float64)[order]
    bad = ~np.isfinite(values)
    if bad.any():
        if nonfinite == "fail":
            row, channel = np.argwhere(bad)[0]
            raise file.fail(
                f"{file.row(int(order[row]))}, column '{value_columns[channel]}': not a finite "
                "number; fix it, or set task.nonfinite=interpolate or drop"
            )
        if nonfinite == "drop":
            kept = ~bad.any(axis=1)
            values, times, codes, order = values[kept], times[kept], codes[kept], order[kept]
            if not len(values):
                raise file.fail("no row has every value column finite")
        else:
            interpolate(file, values, codes, order, value_columns)
    present = np.flatnonzero(np.bincount(codes, minlength=len(ids)))
    lengths = np.bincount(codes, minlength=len(ids))[present].astype(np.int64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    return SeriesRows(values, starts, lengths, times, ids[present], value_columns, len(table))


def time_values(file: DataFile, column: pd.Series) -> np.ndarray:
    """The time column as numbers or datetime64, which sort as time does; text is read as
    ISO dates (2024-03-01, 2024-03-01 12:00), anything else is an error naming its row."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
        return column.to_numpy()
    parsed = pd.to_datetime(column, format="ISO8601", errors="coerce")
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise file.fail(
            f"{file.row(row)}, column '{column.name}': {quoted(column.iloc[row])} is neither a "
            "number nor an ISO date (2024-03-01)"
        )
    return parsed.to_numpy()


def interpolate(
    file: DataFile,
    values: np.ndarray,
    codes: np.ndarray,
    order: np.ndarray,
    columns: list[str],
) -> None:
    """Fill each missing value linearly between its series's nearest finite neighbours
    (the nearest one at a series's ends), in place, as the built-in co2 series's gaps are."""
    for channel in range(values.shape[1]):
        column = values[:, channel]
        bad = ~np.isfinite(column)
        if not bad.any():
            continue
        good, gaps = np.flatnonzero(~bad), np.flatnonzero(bad)
        after = np.searchsorted(good, gaps)
        before_row = good[np.clip(after - 1, 0, max(len(good) - 1, 0))] if len(good) else gaps
        after_row = good[np.clip(after, 0, max(len(good) - 1, 0))] if len(good) else gaps
        has_before = (after > 0) & (codes[before_row] == codes[gaps])
        has_after = (after < len(good)) & (codes[after_row] == codes[gaps])
        alone = np.flatnonzero(~has_before & ~has_after)
        if len(alone):
            row = int(order[gaps[alone[0]]])
            raise file.fail(
                f"{file.row(row)}, column '{columns[channel]}': its series has no finite "
                "value in this column to interpolate from"
            )
        share = np.where(
            has_before & has_after,
            (gaps - before_row) / np.maximum(after_row - before_row, 1),
            np.where(has_before, 0.0, 1.0),
        )
        column[gaps] = (1 - share) * column[before_row] + share * column[after_row]
