"""The statsmodels series: parsed from the installed files, split in time, windowed."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np
import pytest

from rnnlab.tasks.forecasting import (
    SERIES,
    ForecastingTask,
    fill_gaps,
    make_windows,
    read_series,
    split_bounds,
)

STATSMODELS_DATA = Path(str(importlib.resources.files("statsmodels") / "datasets"))


@pytest.mark.parametrize(
    ("name", "length", "gaps"), [("sunspots", 309, 0), ("co2", 2284, 59), ("elec_equip", 257, 0)]
)
def test_each_series_parses_with_its_gaps(name, length, gaps):
    rows = read_series(STATSMODELS_DATA / SERIES[name].file)
    assert len(rows) == length
    assert sum(value is None for _, value in rows) == gaps
    assert not np.isnan(fill_gaps([value for _, value in rows])).any()


def test_gaps_are_interpolated_between_neighbours():
    assert fill_gaps([1.0, None, None, 4.0]).tolist() == [1.0, 2.0, 3.0, 4.0]


def test_splits_are_contiguous_and_in_time_order():
    bounds = split_bounds(309)
    assert bounds == {"train": (0, 216), "validation": (216, 262), "test": (262, 309)}


def test_windows_end_horizon_steps_before_their_target():
    values = np.arange(10.0)
    windows = make_windows(values, range(5, 10), window=3, horizon=2)
    assert windows.steps.tolist() == [5, 6, 7, 8, 9]
    assert windows.inputs[0, :, 0].tolist() == [1.0, 2.0, 3.0]
    assert windows.targets.tolist() == [5.0, 6.0, 7.0, 8.0, 9.0]


def test_a_too_short_series_says_so():
    with pytest.raises(ValueError, match="too short for window=24, horizon=1"):
        make_windows(np.arange(20.0), range(0, 14), window=24, horizon=1)


def test_malformed_line_names_file_and_line(tmp_path):
    broken = tmp_path / "series.csv"
    broken.write_text("time,value\n1,2.5\n2,oops\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"series.csv:3: expected 'time,value'"):
        read_series(broken)


def test_empty_file_is_an_error(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("time,value\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no rows"):
        read_series(empty)


def test_prepared_splits_hold_every_step(compose):
    task = ForecastingTask(compose("task=forecasting", "task.series=co2").task, "data")
    assert len(task.series()) == 2284
    counts = {name: info.num_examples for name, info in task.builder.info.splits.items()}
    assert counts == {name: end - start for name, (start, end) in split_bounds(2284).items()}


def test_an_unknown_series_names_the_known_ones(compose):
    with pytest.raises(ValueError, match="known: sunspots, co2, elec_equip"):
        ForecastingTask(compose("task=forecasting", "task.series=nile").task, "data")
