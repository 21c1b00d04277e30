"""A user's own series file (`task.source=file:PATH`) for series_classification and
forecasting: every format read to the same cases, split as documented, cached by content,
each bad file refused in one line naming it, and a run on a file like a run on a built-in
set (MLflow dataset input, evaluate, predict, nothing left RUNNING)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from command_checks import rnnlab_command
from mlflow import MlflowClient

from rnnlab.config import ConfigError
from rnnlab.tasks import forecasting_files, get_task
from rnnlab.tasks import series_classification_files as series_files
from rnnlab.tasks.data_files import DataFile, DataFileError
from rnnlab.tasks.forecasting import fill_gaps, series_windows
from rnnlab.tasks.series_classification import SPLIT_SEED

FRACTIONS = {"validation": 0.2, "test": 0.2}
CLASSES = np.array(["high", "low", "mid"])


def labelled_cases(seed: int, count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """`count` series of 2 channels and 4-9 steps, the class shifting their level."""
    rng = np.random.default_rng(seed)
    labels = CLASSES[np.arange(count) % 3]  # every class in every split
    shift = {"high": 2.0, "low": -2.0, "mid": 0.0}
    cases = [rng.normal(size=(int(rng.integers(4, 10)), 2)) + shift[label] for label in labels]
    return cases, labels


TRAIN, TEST = labelled_cases(0, 30), labelled_cases(1, 12)


def write_npz(path, splits=(("train", TRAIN), ("test", TEST)), **extra) -> str:
    arrays = {}
    for split, (cases, labels) in splits:
        ragged = np.empty(len(cases), dtype=object)
        ragged[:] = cases
        arrays |= {f"x_{split}": ragged, f"y_{split}": labels}
    np.savez(path, **(arrays | extra))
    return str(path)


def long_table(splits=(("train", TRAIN), ("test", TEST))) -> pd.DataFrame:
    parts = []
    for split, (cases, labels) in splits:
        for index, (case, label) in enumerate(zip(cases, labels, strict=True)):
            parts.append(
                pd.DataFrame(
                    {
                        "split": split,
                        "series": f"{split}-{index}",
                        "step": np.arange(len(case)),
                        "accel": case[:, 0],
                        "gyro": case[:, 1],
                        "label": label,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def write_ts(path, cases, labels) -> str:
    header = "@problemName own\n@univariate false\n@dimensions 2\n@equalLength false\n"
    lines = [header + "@classLabel true high low mid\n@data"]
    for case, label in zip(cases, labels, strict=True):
        channels = [",".join(repr(float(v)) for v in case[:, c]) for c in range(case.shape[1])]
        lines.append(":".join(channels) + f":{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def prepared(path, nonfinite="fail", fractions=FRACTIONS):
    file = DataFile.from_source(f"file:{path}", series_files.FORMATS)
    return series_files.prepare_series_file(file, fractions, SPLIT_SEED, nonfinite, 0.0)


def one_line_error(action, *patterns: str) -> str:
    """The DataFileError `action` raises: one line, matching every pattern."""
    with pytest.raises(DataFileError) as caught:
        action()
    message = str(caught.value)
    assert "\n" not in message, message
    for pattern in patterns:
        assert re.search(pattern, message), message
    return message


# Series classification: formats, splits, classes.


def test_npz_csv_parquet_and_ts_files_of_the_same_series_prepare_the_same_arrays(tmp_path):
    table = long_table()
    table.to_csv(tmp_path / "series.csv", index=False)
    table.to_parquet(tmp_path / "series.parquet")
    write_ts(tmp_path / "own_TRAIN.ts", *TRAIN)
    write_ts(tmp_path / "own_TEST.ts", *TEST)
    sources = ["series.npz", "series.csv", "series.parquet", "own_TRAIN.ts"]
    write_npz(tmp_path / "series.npz")
    results = {name: prepared(tmp_path / name).arrays for name in sources}
    reference = results["series.npz"]
    assert reference["classes"].tolist() == CLASSES.tolist()
    assert reference["series_train"].shape[2] == 2
    # The file's test split is its own; validation is a fifth of its train cases.
    assert len(reference["labels_test"]) == 12
    assert (len(reference["labels_train"]), len(reference["labels_validation"])) == (24, 6)
    for name, arrays in results.items():
        for key in ("series_train", "series_validation", "series_test"):
            assert np.allclose(arrays[key], reference[key], atol=1e-6), (name, key)
        for key in ("labels_train", "labels_test", "lengths_train", "lengths_test"):
            assert arrays[key].tolist() == reference[key].tolist(), (name, key)
    # Standardised with the training cases' own steps; padding stays zero.
    train = reference["series_train"]
    real = np.arange(train.shape[1]) < reference["lengths_train"][:, None]
    assert np.allclose(train[real].mean(axis=0), 0, atol=1e-5)
    assert not train[~real].any()


def test_rows_in_any_order_and_numbered_series_group_as_written_ones(tmp_path):
    table = long_table()
    held_out = table.series.isin([f"train-{index}" for index in range(24, 30)])
    table.loc[held_out, "split"] = "validation"  # all three splits the file's own: no dealing
    table.to_csv(tmp_path / "written.csv", index=False)
    # Numbered series, their rows shuffled: grouped by a sort, not by where rows stand.
    numbered = table.assign(series=pd.factorize(table.series)[0] * 7)
    numbered.sample(frac=1, random_state=0).to_csv(tmp_path / "shuffled.csv", index=False)
    written = prepared(tmp_path / "written.csv").arrays
    shuffled = prepared(tmp_path / "shuffled.csv").arrays
    assert written["classes"].tolist() == shuffled["classes"].tolist()

    def cases(arrays, split):
        """The split's cases as rows (label, then the padded series), in a fixed order."""
        flat = arrays[f"series_{split}"].reshape(len(arrays[f"series_{split}"]), -1)
        every = np.column_stack([arrays[f"labels_{split}"], flat])
        return every[np.lexsort(every.T[::-1])]

    for split in ("train", "validation", "test"):
        assert np.allclose(cases(written, split), cases(shuffled, split), atol=1e-6), split
    assert len(shuffled["labels_validation"]) == 6


def test_padded_npz_with_lengths_reads_as_the_ragged_one(tmp_path):
    cases, labels = TRAIN
    lengths = np.array([len(case) for case in cases])
    padded = np.full((len(cases), lengths.max(), 2), 99.0)  # past a length is never data
    for index, case in enumerate(cases):
        padded[index, : len(case)] = case
    test_padded = np.stack([np.pad(c, ((0, 9 - len(c)), (0, 0))) for c in TEST[0]])
    np.savez(
        tmp_path / "padded.npz",
        x_train=padded,
        y_train=labels,
        lengths_train=lengths,
        x_test=test_padded,
        y_test=TEST[1],
        lengths_test=[len(c) for c in TEST[0]],
    )
    ragged = prepared(write_npz(tmp_path / "ragged.npz")).arrays
    again = prepared(tmp_path / "padded.npz").arrays
    for key in ("series_train", "series_test", "lengths_train", "labels_test"):
        assert np.allclose(again[key], ragged[key], atol=1e-6), key


def test_a_file_without_splits_is_dealt_by_the_stated_fractions_and_a_fixed_seed(tmp_path):
    table = long_table().drop(columns="split")
    table.to_csv(tmp_path / "all.csv", index=False)
    arrays = prepared(tmp_path / "all.csv", fractions={"validation": 0.1, "test": 0.3}).arrays
    sizes = [len(arrays[f"labels_{split}"]) for split in ("train", "validation", "test")]
    assert sizes == [42 - 4 - 12, 4, 12]  # int(0.1 * 42), int(0.3 * 42), the rest
    # Every case once: the lengths of the three splits are the file's, reordered.
    lengths = np.concatenate(
        [arrays[f"lengths_{split}"] for split in ("train", "validation", "test")]
    )
    file_lengths = [len(case) for case in TRAIN[0] + TEST[0]]
    assert sorted(lengths.tolist()) == sorted(file_lengths)
    again = prepared(tmp_path / "all.csv", fractions={"validation": 0.1, "test": 0.3}).arrays
    assert np.array_equal(again["series_test"], arrays["series_test"])


def test_classes_come_from_the_training_split_and_labels_may_be_numbers(tmp_path):
    numbers = {"high": 7, "low": 3, "mid": 5}
    as_numbers = [(s, (c, np.array([numbers[x] for x in y]))) for s, (c, y) in
                  (("train", TRAIN), ("test", TEST))]  # fmt: skip
    arrays = prepared(write_npz(tmp_path / "numbers.npz", as_numbers)).arrays
    assert arrays["classes"].tolist() == [3, 5, 7]
    test_labels = arrays["classes"][arrays["labels_test"]]
    assert test_labels.tolist() == [numbers[x] for x in TEST[1]]


def test_a_single_ts_file_is_dealt_into_three_splits(tmp_path):
    arrays = prepared(write_ts(tmp_path / "anything.ts", *TRAIN)).arrays
    assert [len(arrays[f"labels_{s}"]) for s in ("train", "validation", "test")] == [18, 6, 6]


def test_nonfinite_drop_leaves_out_the_series_that_holds_it(tmp_path):
    table = long_table()
    table.loc[3, "gyro"] = np.nan  # a step of series train-0
    table.to_csv(tmp_path / "gap.csv", index=False)
    one_line_error(
        lambda: prepared(tmp_path / "gap.csv"), r"gap\.csv: line 5, column 'gyro': not a finite"
    )
    arrays = prepared(tmp_path / "gap.csv", nonfinite="drop").arrays
    assert len(arrays["labels_train"]) + len(arrays["labels_validation"]) == 29


# Series classification: each bad file in one line, naming it.


def truncated(path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


BAD_SERIES_FILES = {
    "nonexistent path": (lambda d: d / "missing.npz", r"missing\.npz: does not exist"),
    "unknown format": (
        lambda d: (d / "f.xlsx").write_bytes(b"PK"),
        r"f\.xlsx: unknown format '\.xlsx'; this task reads \.csv, \.npz, \.parquet",
    ),
    "missing label column": (
        lambda d: long_table().drop(columns="label").to_csv(d / "f.csv", index=False),
        r"f\.csv: no column 'label' \(its columns: split, series, step, accel, gyro\)",
    ),
    "misnamed npz array": (
        lambda d: np.savez(d / "f.npz", x_tran=np.zeros((2, 3, 1)), y_train=[0, 1]),
        r"f\.npz: unknown array 'x_tran'",
    ),
    "no rows": (
        lambda d: long_table().iloc[:0].to_csv(d / "f.csv", index=False),
        r"f\.csv: no rows",
    ),
    "an empty test split": (
        lambda d: np.savez(
            d / "f.npz",
            x_train=np.ones((4, 3, 1)),
            y_train=[0, 1, 0, 1],
            x_test=np.ones((0, 3, 1)),
            y_test=np.zeros(0),
        ),  # fmt: skip
        r"f\.npz: no cases in the test split",
    ),
    "infinite value": (
        lambda d: np.savez(
            d / "f.npz",
            x_train=np.where(np.arange(24).reshape(4, 3, 2) == 13, np.inf, 1.0),
            y_train=[0, 1, 0, 1],
        ),  # fmt: skip
        r"f\.npz: x_train\[2\], step 0, channel 1: not a finite number",
    ),
    "channel counts differ": (
        lambda d: write_npz(
            d / "f.npz", (("train", ([np.ones((3, 2)), np.ones((4, 3))], np.array(["a", "b"]))),)
        ),
        r"f\.npz: x_train\[1\] has 3 channels, x_train\[0\] has 2",
    ),
    "a series of length 0": (
        lambda d: write_npz(
            d / "f.npz", (("train", ([np.ones((3, 2)), np.ones((0, 2))], np.array(["a", "b"]))),)
        ),
        r"f\.npz: x_train\[1\]: a series of length 0",
    ),
    "a length of 0": (
        lambda d: np.savez(
            d / "f.npz", x_train=np.ones((2, 3, 1)), y_train=[0, 1], lengths_train=[3, 0]
        ),
        r"f\.npz: x_train\[1\]: a series of length 0",
    ),
    "test label never in training": (
        lambda d: write_npz(
            d / "f.npz",
            (("train", TRAIN), ("test", (TEST[0], np.where(TEST[1] == "mid", "top", TEST[1])))),
        ),
        r"f\.npz: x_test\[2\]: label 'top' of the test split is never in the train split",
    ),
    "truncated csv": (
        lambda d: (long_table().to_csv(d / "f.csv", index=False), truncated(d / "f.csv")),
        r"f\.csv: unreadable as csv: CSV parse error",
    ),
    "truncated parquet": (
        lambda d: (long_table().to_parquet(d / "f.parquet"), truncated(d / "f.parquet")),
        r"f\.parquet: unreadable as parquet",
    ),
    "truncated npz": (
        lambda d: (write_npz(d / "f.npz"), truncated(d / "f.npz")),
        r"f\.npz: unreadable as npz",
    ),
    "a channel of text": (
        lambda d: (
            long_table()
            .assign(gyro=lambda t: t.gyro.astype(str).where(t.index != 9, "hi"))
            .to_parquet(d / "f.parquet")
        ),
        r"f\.parquet: row 9, column 'gyro': 'hi' is not a number",
    ),
    "a step twice": (
        lambda d: long_table().replace({"step": {1: 0}}).to_csv(d / "f.csv", index=False),
        r"f\.csv: line 3: series 'train-0' has step 0 twice",
    ),
    "a label that changes within a series": (
        lambda d: (
            long_table()
            .replace({"label": {"high": "mid"}})
            .pipe(lambda t: t.assign(label=np.where(t.index == 2, "low", t.label)))
            .to_csv(d / "f.csv", index=False)
        ),
        r"f\.csv: line 4, column 'label': 'low', but the series's first row says 'mid'",
    ),
    "an unknown split": (
        lambda d: (
            long_table().replace({"split": {"test": "holdout"}}).to_csv(d / "f.csv", index=False)
        ),
        r"f\.csv: line \d+, column 'split': 'holdout' is not one of train, validation, test",
    ),
    "a malformed ts case": (
        lambda d: (d / "f.ts").write_text("@classLabel true a b\n@data\n1,2:a\n1,x:b\n"),
        r"f\.ts:4: expected 'values:...:label'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SERIES_FILES))
def test_a_bad_series_file_is_one_line_naming_it(tmp_path, case):
    write, pattern = BAD_SERIES_FILES[case]
    written = write(tmp_path)
    path = written if isinstance(written, os.PathLike) else next(tmp_path.glob("f.*"), None)
    one_line_error(lambda: prepared(path), pattern)


# Forecasting: several series, several columns, checked.


def sensors_table(length: int = 40) -> pd.DataFrame:
    """Two sensors' daily temperature and humidity, rows shuffled."""
    time = pd.date_range("2024-01-01", periods=length, freq="D").strftime("%Y-%m-%d")
    parts = [
        pd.DataFrame(
            {
                "sensor": name,
                "time": time,
                "temp": offset + np.arange(length) * 1.0,
                "humidity": offset * 10 - np.arange(length) * 0.5,
            }
        )  # fmt: skip
        for name, offset in (("roof", 100.0), ("cellar", 200.0))
    ]
    return pd.concat(parts).sample(frac=1, random_state=0).reset_index(drop=True)


def rows_of(path, nonfinite="fail", value_columns=None, id_column="sensor"):
    file = DataFile.from_source(f"file:{path}", forecasting_files.FORMATS)
    return forecasting_files.read_series_rows(file, "time", value_columns, id_column, nonfinite)


def test_several_series_are_sorted_in_time_and_windowed_without_crossing(tmp_path):
    sensors_table().to_csv(tmp_path / "sensors.csv", index=False)
    rows = rows_of(tmp_path / "sensors.csv")
    assert rows.columns == ["temp", "humidity"] and rows.lengths.tolist() == [40, 40]
    windows = series_windows(rows, (0.7, 0.15), window=5, horizon=2)
    for split, windows_of in windows.items():
        series = np.searchsorted(rows.starts, windows_of.steps, side="right") - 1
        position = windows_of.steps - rows.starts[series]
        # A target at step t of its series follows steps t-6 .. t-2 of the same series.
        offset = np.where(rows.ids[series] == "roof", 100.0, 200.0)
        assert np.allclose(windows_of.targets[:, 0], offset + position)
        assert np.allclose(windows_of.inputs[:, -1, 0], offset + position - 2)
        assert np.allclose(windows_of.inputs[:, 0, 0], offset + position - 6)
        low, high = {"train": (6, 28), "validation": (28, 34), "test": (34, 40)}[split]
        assert position.min() == low and position.max() == high - 1, split


def test_interpolate_fills_gaps_within_a_series_as_the_built_in_series_are(tmp_path):
    table = sensors_table().sort_values(["sensor", "time"]).reset_index(drop=True)
    table.loc[[0, 5, 6, 45], "temp"] = np.nan  # cellar's first value; a run of two; roof's
    table.to_csv(tmp_path / "gaps.csv", index=False)
    rows = rows_of(tmp_path / "gaps.csv", nonfinite="interpolate", value_columns=["temp"])
    for series, start in enumerate(rows.starts):
        observed = table[table.sensor == rows.ids[series]].temp.tolist()
        expected = fill_gaps([None if np.isnan(v) else v for v in observed])
        assert np.allclose(rows.values[start : start + 40, 0], expected)
    dropped = rows_of(tmp_path / "gaps.csv", nonfinite="drop")
    assert dropped.lengths.tolist() == [37, 39]


BAD_FORECAST_FILES = {
    "no time column": (
        lambda t: t.rename(columns={"time": "date"}),
        r"f\.csv: no column 'time' \(its columns: sensor, date, temp, humidity\); "
        r"name it with task\.time_column",
    ),
    "a value that is not a number": (
        lambda t: t.assign(temp=t.temp.astype(str).where(t.index != 3, "warm")),
        r"f\.csv: line 5, column 'temp': 'warm' is not a number",
    ),
    "a missing value": (
        lambda t: t.assign(humidity=t.humidity.where(t.index != 7)),
        r"f\.csv: line 9, column 'humidity': not a finite number; .*task\.nonfinite",
    ),
    "a time twice": (
        lambda t: t.assign(time=t.time.where(t.index != 10, t.time[11])).pipe(
            lambda u: u.assign(sensor=u.sensor.where(u.index != 10, u.sensor[11]))
        ),
        r"f\.csv: line 1[23]: time .* is there twice",
    ),
    "a time that is no date": (
        lambda t: t.assign(time=t.time.where(t.index != 4, "soon")),
        r"f\.csv: line 6, column 'time': 'soon' is neither a number nor an ISO date",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FORECAST_FILES))
def test_a_bad_forecasting_file_is_one_line_naming_it(tmp_path, case):
    change, pattern = BAD_FORECAST_FILES[case]
    change(sensors_table()).to_csv(tmp_path / "f.csv", index=False)
    one_line_error(lambda: rows_of(tmp_path / "f.csv"), pattern)


def test_a_series_too_short_for_the_window_says_so(tmp_path):
    sensors_table(12).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ConfigError, match="too short for window=24, horizon=1"):
        series_windows(rows_of(tmp_path / "short.csv"), (0.7, 0.15), window=24, horizon=1)


# The tasks: config, cache, dataset input, evaluate, predict, the command.


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task.source=ucr", "task.source must be embedded or file:PATH, got 'ucr'"),
        ("task.test_fraction=0.9", "must be above 0 and sum below 1, got 0.2 and 0.9"),
        ("task.nonfinite=zero", "task.nonfinite must be fail or drop"),
    ],
)
def test_the_file_keys_are_checked_with_the_config(compose, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        compose("task=series_classification", override)


def test_the_second_load_reads_the_cache_not_the_file(compose, tmp_path, monkeypatch):
    source = write_npz(tmp_path / "series.npz")
    cfg = compose("task=series_classification", f"task.source=file:{source}")
    first = get_task(cfg.task, str(tmp_path / "data"))
    first_data = first.load(batch_size=8, seed=0)
    [cached] = (tmp_path / "data" / "cache" / "series_classification").glob("*.npz")
    assert cached.name.startswith(first_data.data_hash)

    def unread(*arguments, **keywords):
        raise AssertionError("the file was read again")

    monkeypatch.setattr(series_files, "read_cases", unread)
    second = get_task(cfg.task, str(tmp_path / "data"))
    second_data = second.load(batch_size=8, seed=0)
    assert second_data.data_hash == first_data.data_hash
    assert (second.classes, second.channels, second.steps) == (("high", "low", "mid"), 2, 9)
    first_test = np.concatenate([x for x, _ in first_data.test.as_numpy_iterator()])
    second_test = np.concatenate([x for x, _ in second_data.test.as_numpy_iterator()])
    assert np.array_equal(first_test, second_test)
    # Another file is another cache entry: read, so here it fails.
    with pytest.raises(AssertionError, match="read again"):
        get_task(
            compose(
                "task=series_classification",
                f"task.source=file:{write_ts(tmp_path / 'x.ts', *TRAIN)}",
            ).task,
            str(tmp_path / "data"),
        ).load(batch_size=8, seed=0)


@pytest.mark.slow
def test_a_run_on_a_series_file_is_recorded_evaluated_and_checked_against_the_file(
    compose, tracking_uri, tmp_path
):
    from rnnlab.training.evaluate import RunDataChangedError, evaluate
    from rnnlab.training.run import run

    source = tmp_path / "series.parquet"
    long_table().to_parquet(source)
    result = run(
        compose(
            "task=series_classification",
            f"task.source=file:{source}",
            f"data_dir={tmp_path / 'data'}",
            "cell=gru",
            "model.param_budget=400",
            "trainer.epochs=1",
            "tracking.log_model=true",
        )
    )
    recorded = MlflowClient(tracking_uri).get_run(result.run_id)
    inputs = {d.dataset.name: d.dataset for d in recorded.inputs.dataset_inputs}
    assert set(inputs) == {f"series.parquet [{s}]" for s in ("train", "validation", "test")}
    dataset = inputs["series.parquet [train]"]
    assert str(source) in dataset.source
    profile = DataFile.from_source(f"file:{source}", ["parquet"]).record(len(long_table())).profile
    assert json.loads(dataset.profile) == profile
    assert abs(recorded.data.metrics["n_params"] - 400) < 100  # the budget chose the width
    assert MlflowClient(tracking_uri).list_artifacts(result.run_id, "gradient_decay")
    rows = evaluate(result.run_id, tracking_uri)
    for name, logged, recomputed in rows:
        assert logged == pytest.approx(recomputed, abs=1e-5), name
    # The same path with other content is not the run's data.
    changed = long_table()
    changed.loc[0, "accel"] += 1
    changed.to_parquet(source)
    with pytest.raises(RunDataChangedError, match=r"series\.parquet is not the file it was"):
        evaluate(result.run_id, tracking_uri)


@pytest.mark.slow
def test_a_forecasting_file_trains_and_its_stored_model_predicts_from_a_csv_file(
    compose, tracking_uri, tmp_path
):
    from rnnlab.records.stored_model import load_stored_model
    from rnnlab.training.evaluate import predict
    from rnnlab.training.run import run

    sensors_table().to_csv(tmp_path / "sensors.csv", index=False)
    result = run(
        compose(
            "task=forecasting",
            f"task.source=file:{tmp_path / 'sensors.csv'}",
            "task.id_column=sensor",
            "task.window=5",
            f"data_dir={tmp_path / 'data'}",
            "trainer.epochs=1",
            "tracking.log_model=true",
        )
    )
    assert {"test_mae", "test_naive_mae"} <= set(result.metrics)
    latest = sensors_table().query("sensor == 'roof'").sort_values("time").tail(8)
    latest.drop(columns="sensor").to_csv(tmp_path / "latest.csv", index=False)
    [line] = predict(result.run_id, tracking_uri, [str(tmp_path / "latest.csv")])
    stored = load_stored_model(MlflowClient(tracking_uri), result.run_id)
    window = latest[["temp", "humidity"]].to_numpy(np.float32)[-5:][np.newaxis]
    temp, humidity = stored.keras_model.predict(window, verbose=0)[0]
    assert line == f"temp {temp:.4f}, humidity {humidity:.4f}  (1 step after the last row given)"


def test_the_command_fails_on_a_bad_file_in_one_line_and_leaves_no_run(tmp_path):
    table = long_table()
    table.loc[5, "accel"] = np.inf
    table.to_csv(tmp_path / "bad.csv", index=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = rnnlab_command(
        "train",
        "task=series_classification",
        "task.source=file:bad.csv",
        f"tracking.uri={uri}",
        f"data_dir={tmp_path / 'data'}",
        cwd=tmp_path,  # the path is relative to where the command runs
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"rnnlab: {tmp_path / 'bad.csv'}: line 7, column 'accel': not a finite number; "
        "fix it, or leave such series out with task.nonfinite=drop"
    )
    if (tmp_path / "mlflow.db").exists():
        client = MlflowClient(uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert not client.search_runs(experiments), "the file is checked before a run opens"


def test_a_file_is_read_checked_and_cached_without_tensorflow(tmp_path):
    """What `rnnlab train` does before TensorFlow loads, so a bad file costs seconds."""
    write_npz(tmp_path / "series.npz")
    sensors_table().to_csv(tmp_path / "sensors.csv", index=False)
    script = (
        "import sys\n"
        "from rnnlab.config import compose_config\n"
        "from rnnlab.tasks import check_data_file\n"
        "for task, source in (('series_classification', 'series.npz'), "
        "('forecasting', 'sensors.csv')):\n"
        "    cfg = compose_config([f'task={task}', f'task.source=file:{source}', "
        "'task.id_column=sensor' if task == 'forecasting' else 'seed=0'])\n"
        f"    check_data_file(cfg.task, {str(tmp_path / 'data')!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
    assert len(list((tmp_path / "data" / "cache").glob("*/*.npz"))) == 2
