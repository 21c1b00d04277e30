"""A user's file of labelled series (`task=series_classification task.source=file:PATH`),
read into padded arrays per split and checked on the way in.

Three kinds of file, each read by the library that reads it:
- NumPy `.npz`: `x_train` (cases, steps, channels), `y_train` (cases), `x_test`, `y_test`,
  optionally `x_validation`, `y_validation`; or `x`, `y` with no split. Ragged series are
  an object array of (steps, channels) arrays, or padded arrays with `lengths_<split>`.
- A long table, CSV or Parquet: one row per series and step,
  `split,series,step,<one column per channel>,label` (the split column optional).
- UCR/UEA `.ts` files, of any name (the archive's format, parsed by `read_ts`). A file named
  `<NAME>_TRAIN.ts` beside a `<NAME>_TEST.ts` is the archive's pair: that file is the test
  split. Any other `.ts` file is one split, dealt like a table without a split column.

A split the file lacks is dealt from its training cases (all its cases, if it has no
split) at `task.validation_fraction` and `task.test_fraction`, by a fixed seed. Everything
is vectorised over rows: a million-row table is grouped by series with one sort.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnlab.tasks.data_files import (
    SPLITS,
    DataFile,
    DataFileError,
    cache_path,
    load_cached,
    quoted,
    read_npz,
    read_table,
    require_columns,
    save_cached,
    seeded_split,
)

if TYPE_CHECKING:  # pandas loads with a table file, not with the task
    import pandas as pd

FORMATS = ("npz", "csv", "parquet", "ts")
SPLIT_SEED = 19990401  # fixed forever: which train cases are held out (the archive's, a file's)
PADDING = 0.0  # after standardisation; the model's mask skips padded frames
# The version of a file's prepared arrays: raise it when preparing them changes, so that no
# cache of the old way is read.
PREPARED_VERSION = 1
# The long table's columns; every other column is a channel.
SPLIT_COLUMN, SERIES_COLUMN, STEP_COLUMN, LABEL_COLUMN = "split", "series", "step", "label"
LONG_FORM = "split,series,step,<one column per channel>,label"
NPZ_ARRAYS = "x_train, y_train, x_test, y_test (optionally x_validation, y_validation, lengths_*)"
NONFINITE = ("fail", "drop")  # a case with a NaN or infinity: fail, or leave the case out


@dataclass
class Cases:
    """The cases of one split: padded series, their lengths and labels as the file has them."""

    series: np.ndarray  # (cases, steps, channels) float32; zero after each case's last step
    lengths: np.ndarray  # (cases,) int64, each at least 1
    labels: np.ndarray  # (cases,) numbers or strings, as in the file
    origin: np.ndarray  # (cases,) what `describe` takes to say where a case is in the file
    describe: Callable[[int], str]  # e.g. "series 'a' (line 7)", "x_test[3]"

    def __len__(self) -> int:
        return len(self.lengths)

    def where(self, case: int) -> str:
        return self.describe(int(self.origin[case]))

    def take(self, indices: np.ndarray) -> Cases:
        return Cases(
            self.series[indices],
            self.lengths[indices],
            self.labels[indices],
            self.origin[indices],
            self.describe,
        )


def read_ts(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """Parse a UCR `.ts` file: `@key` headers, `@data`, then `dim:dim:...:label` per case.

    Each case is returned as a (steps, dimensions) array; a malformed case names file and line.
    """
    cases, labels, classes, in_data = [], [], None, False
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                key, _, value = line.partition(" ")
                if key.lower() == "@classlabel":
                    classes = value.split()[1:]
                in_data = key.lower() == "@data"
                continue
            *dimensions, label = line.split(":")
            try:
                channels = [[float(v) for v in dimension.split(",")] for dimension in dimensions]
                case = np.array(channels, dtype=np.float32).T
            except ValueError:
                raise ValueError(
                    f"{path}:{number}: expected 'values:...:label' with equal-length "
                    f"dimensions, got {line[:60]!r}"
                ) from None
            if not dimensions or (classes is not None and label not in classes):
                raise ValueError(f"{path}:{number}: unknown class label {label!r}")
            cases.append(case)
            labels.append(label)
    if not cases:
        raise ValueError(f"{path}: no cases after @data")
    return cases, labels


def paired_test_file(file: DataFile) -> DataFile | None:
    """The archive's `<NAME>_TEST.ts` beside a `<NAME>_TRAIN.ts`, if there is one."""
    if file.format != "ts":
        return None
    stem = file.path.stem
    for train, test in (("_TRAIN", "_TEST"), ("_train", "_test")):
        if stem.endswith(train):
            partner = file.path.with_name(stem.removesuffix(train) + test + file.path.suffix)
            if partner.is_file():
                return DataFile.from_source(f"file:{partner}", ("ts",))
    return None


def read_cases(file: DataFile, drop_nonfinite: bool) -> tuple[dict[str, Cases], int]:
    """The splits the file holds, by name, each as Cases; and the file's rows (a table's
    rows, an array file's cases)."""
    if file.format not in ("npz", "ts"):
        return cases_from_table(file, drop_nonfinite)
    if file.format == "npz":
        splits, channel = cases_from_npz(file), "channel"
    else:
        splits, channel = {"train": cases_from_ts(file)}, "dimension"
        test = paired_test_file(file)
        if test is not None:
            splits["test"] = cases_from_ts(test)
    channel_names = [f"{channel} {index}" for index in range(channel_count(file, splits))]
    rows = sum(len(cases) for cases in splits.values())
    checked = {
        name: finite_cases(file, cases, channel_names, drop_nonfinite)
        for name, cases in splits.items()
    }
    return checked, rows


def channel_count(file: DataFile, splits: dict[str, Cases]) -> int:
    """The channels every split has; a split with other channels is an error."""
    counts = {name: cases.series.shape[2] for name, cases in splits.items()}
    first = next(iter(counts.values()))
    for name, count in counts.items():
        if count != first:
            raise file.fail(f"the {name} split has {count} channels, the train split {first}")
    return first


def finite_cases(file: DataFile, cases: Cases, channel_names: list[str], drop: bool) -> Cases:
    """The cases whose every value (within their length) is finite: fail on the first
    other, or leave them out with `task.nonfinite=drop`."""
    within = np.arange(cases.series.shape[1]) < cases.lengths[:, np.newaxis]
    bad = ~np.isfinite(cases.series) & within[..., np.newaxis]
    if not bad.any():
        return cases
    if drop:
        kept = np.flatnonzero(~bad.any(axis=(1, 2)))
        return cases.take(kept)
    case, step, channel = np.argwhere(bad)[0]
    raise file.fail(
        f"{cases.where(case)}, step {step}, {channel_names[channel]}: not a finite number; "
        "fix it, or leave such cases out with task.nonfinite=drop"
    )


def padded(
    file: DataFile, items: list[np.ndarray], where: Callable[[int], str]
) -> tuple[np.ndarray, np.ndarray]:
    """Ragged (steps, channels) arrays as one zero-padded array and their lengths."""
    shapes = [(len(item), 1) if item.ndim == 1 else item.shape for item in items]
    for index, shape in enumerate(shapes):
        if len(shape) != 2:
            raise file.fail(f"{where(index)} has shape {shape}: a series is (steps, channels)")
        steps, channels = shape
        if steps == 0:
            raise file.fail(f"{where(index)}: a series of length 0")
        if channels != shapes[0][1]:
            raise file.fail(
                f"{where(index)} has {channels} channels, {where(0)} has {shapes[0][1]}"
            )
    lengths = np.array([steps for steps, _ in shapes], dtype=np.int64)
    series = np.zeros((len(items), int(lengths.max()), shapes[0][1]), dtype=np.float32)
    for index, item in enumerate(items):  # one copy per case: cases, not rows
        series[index, : lengths[index]] = item.reshape(int(lengths[index]), -1)
    return series, lengths


def cases_from_npz(file: DataFile) -> dict[str, Cases]:
    """x_<split> and y_<split> (and lengths_<split>) of each split the file has, or x and y."""
    arrays = read_npz(file)
    suffixes = [f"_{split}" for split in SPLITS] if "x" not in arrays else [""]
    known = {f"{kind}{suffix}" for kind in ("x", "y", "lengths") for suffix in suffixes}
    for name in arrays:
        if name not in known:
            raise file.fail(f"unknown array '{name}'; a series file holds {NPZ_ARRAYS}")
    if "x_train" not in arrays and "x" not in arrays:
        listed = ", ".join(arrays) or "none"
        raise file.fail(f"no array 'x_train' (its arrays: {listed}); it holds {NPZ_ARRAYS}")
    splits = {}
    for split, suffix in zip(SPLITS, suffixes, strict=False):
        if f"x{suffix}" not in arrays:
            if f"y{suffix}" in arrays:
                raise file.fail(f"'y{suffix}' has no 'x{suffix}' beside it")
            continue
        splits[split] = npz_split(file, arrays, suffix)
    return splits


def npz_split(file: DataFile, arrays: dict[str, np.ndarray], suffix: str) -> Cases:
    x_name, y_name, lengths_name = f"x{suffix}", f"y{suffix}", f"lengths{suffix}"
    if y_name not in arrays:
        raise file.fail(f"'{x_name}' has no labels: add '{y_name}', one per case")
    x, labels = arrays[x_name], arrays[y_name]
    if labels.ndim != 1 or len(labels) != len(x):
        raise file.fail(
            f"'{y_name}' has shape {labels.shape}: one label per case of '{x_name}' "
            f"({len(x)}) is shape ({len(x)},)"
        )
    if not len(x):
        raise file.fail(f"no cases in the {SPLIT_NAMES[suffix]} split ('{x_name}' is empty)")

    def where(index: int) -> str:
        return f"{x_name}[{index}]"

    if x.dtype == object:
        series, lengths = padded(file, list(x), where)
    else:
        if x.dtype.kind not in "fiu" or x.ndim not in (2, 3):
            raise file.fail(
                f"'{x_name}' is {x.dtype} of shape {x.shape}: numbers (cases, steps, channels), "
                "or (cases, steps) for one channel"
            )
        series = (x if x.ndim == 3 else x[..., np.newaxis]).astype(np.float32)
        lengths = np.full(len(x), series.shape[1], dtype=np.int64)
        if lengths_name in arrays:
            lengths = np.asarray(arrays[lengths_name])
            if lengths.shape != (len(x),) or lengths.dtype.kind not in "iu":
                raise file.fail(f"'{lengths_name}' must hold one integer per case of '{x_name}'")
            outside = np.flatnonzero((lengths > series.shape[1]) | (lengths < 0))
            if len(outside):
                raise file.fail(
                    f"{lengths_name}[{outside[0]}] is {lengths[outside[0]]}: "
                    f"'{x_name}' has {series.shape[1]} steps"
                )
            # Whatever stands past a case's length is padding, never data.
            series[np.arange(series.shape[1]) >= lengths[:, np.newaxis]] = 0.0
        if not series.shape[1] or not series.shape[2]:
            raise file.fail(f"'{x_name}' has shape {x.shape}: no steps or no channels")
        empty = np.flatnonzero(lengths == 0)
        if len(empty):
            raise file.fail(f"{where(empty[0])}: a series of length 0")
    require_labels(file, labels, lambda index: f"{y_name}[{index}]")
    return Cases(series, lengths.astype(np.int64), labels, np.arange(len(x)), where)


SPLIT_NAMES = {f"_{split}": split for split in SPLITS} | {"": "file's"}


def require_labels(file: DataFile, labels: np.ndarray, where: Callable[[int], str]) -> None:
    """Fail on the first missing label (NaN, or an empty string)."""
    if labels.dtype.kind == "f":
        missing = np.flatnonzero(~np.isfinite(labels))
    elif labels.dtype.kind in "UO":
        missing = np.flatnonzero(labels.astype(str) == "")
    else:
        return
    if len(missing):
        raise file.fail(f"{where(int(missing[0]))}: no label")


def cases_from_ts(file: DataFile) -> Cases:
    """The cases of one `.ts` file (its parser names file and line of a malformed case)."""
    try:
        items, labels = read_ts(file.path)
    except (ValueError, UnicodeDecodeError) as error:
        raise DataFileError(str(error).splitlines()[0]) from None
    case_lines = ts_case_lines(file.path)

    def where(index: int) -> str:
        return f"{file.path.name} line {case_lines[index]}"

    series, lengths = padded(file, items, where)
    return Cases(series, lengths, np.array(labels), np.arange(len(items)), where)


def ts_case_lines(path: Path) -> list[int]:
    """The line of each case of a `.ts` file (those after `@data`), as `read_ts` counts them."""
    lines, in_data = [], False
    with path.open(encoding="utf-8") as text:
        for number, line in enumerate(text, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if in_data:
                lines.append(number)
            in_data = in_data or line.split(" ")[0].lower() == "@data"
    return lines


def cases_from_table(file: DataFile, drop_nonfinite: bool) -> tuple[dict[str, Cases], int]:
    """A long table's rows grouped into cases by one sort on (series, step), no row loop."""
    import pandas as pd

    table = read_table(file, (), text_as_categories=True)
    require_columns(
        file,
        table.columns,
        (SERIES_COLUMN, STEP_COLUMN, LABEL_COLUMN),
        lambda column: f"a series table's columns are {LONG_FORM}",
    )
    named = {SPLIT_COLUMN, SERIES_COLUMN, STEP_COLUMN, LABEL_COLUMN}
    channel_names = [str(column) for column in table.columns if column not in named]
    if not channel_names:
        raise file.fail(f"no channel columns: a series table's columns are {LONG_FORM}")
    for column in channel_names:
        if not pd.api.types.is_numeric_dtype(table[column]):
            text = table[column].astype(object)
            numbers = pd.to_numeric(text, errors="coerce")
            row = int(np.flatnonzero(numbers.isna() & text.notna())[0])
            value = quoted(text.iloc[row])
            raise file.fail(
                f"{file.row(row)}, column '{column}': {value} is not a number "
                f"(every column but split, series, step and label is a channel)"
            )
    for column in named & set(table.columns):
        missing = np.flatnonzero(table[column].isna().to_numpy())
        if len(missing):
            raise file.fail(f"{file.row(int(missing[0]))}, column '{column}': empty")
    values = table[channel_names].to_numpy(dtype=np.float32)
    codes, names = series_codes(table[SERIES_COLUMN])
    steps = table[STEP_COLUMN].to_numpy()
    # Steps that are not numbers or times (ISO dates as text) are ordered by their rank.
    ranks = steps if steps.dtype.kind in "iufM" else pd.factorize(steps, sort=True)[0]
    # Rows in series order (first appearance), each series's steps in order: most files
    # are written so already, and then need no sort.
    same_series = codes[1:] == codes[:-1]
    in_order = bool((codes[1:] >= codes[:-1]).all() and (ranks[1:] > ranks[:-1])[same_series].all())
    order = np.arange(len(codes)) if in_order else np.lexsort((ranks, codes))
    if not in_order:
        codes, ranks, values = codes[order], ranks[order], values[order]
        same_series = codes[1:] == codes[:-1]
        repeated = np.flatnonzero(same_series & (ranks[1:] == ranks[:-1]))
        if len(repeated):
            row = int(order[repeated[0] + 1])
            which, step = quoted(names[codes[repeated[0]]]), quoted(steps[row])
            raise file.fail(f"{file.row(row)}: series {which} has step {step} twice")
    starts = np.flatnonzero(np.r_[True, ~same_series])
    lengths = np.diff(np.r_[starts, len(order)]).astype(np.int64)
    first_rows = order[starts]
    sorting = None if in_order else order
    labels = per_series(file, table, LABEL_COLUMN, sorting, same_series, starts)
    split_of = (
        per_series(file, table, SPLIT_COLUMN, sorting, same_series, starts)
        if SPLIT_COLUMN in table.columns
        else None
    )
    rows = len(table)
    del table  # all it holds is in the arrays now: a million rows need not stay twice

    def where(case: int) -> str:
        return f"series {quoted(names[case])} ({file.row(int(first_rows[case]))})"

    nonfinite = ~np.isfinite(values)
    kept = np.ones(len(names), dtype=bool)
    if nonfinite.any():
        if not drop_nonfinite:
            bad = np.flatnonzero(nonfinite.any(axis=1))
            at = bad[np.argmin(order[bad])]  # the first in the file's order
            row, channel = int(order[at]), int(np.argmax(nonfinite[at]))
            raise file.fail(
                f"{file.row(row)}, column '{channel_names[channel]}': not a finite "
                "number; fix it, or leave such series out with task.nonfinite=drop"
            )
        kept[np.unique(codes[nonfinite.any(axis=1)])] = False
    # One scatter: row k of the sorted rows is step k - start of its series.
    series = np.zeros((len(names), int(lengths.max()), len(channel_names)), dtype=np.float32)
    position = np.arange(len(order)) - np.repeat(starts, lengths)
    series[codes, position] = values
    everything = Cases(series, lengths, labels, np.arange(len(names)), where)
    if split_of is None:
        return {"train": everything.take(np.flatnonzero(kept))}, rows
    split_names = split_of.astype(str)
    unknown = np.flatnonzero(~np.isin(split_names, SPLITS))
    if len(unknown):
        case = int(unknown[0])
        raise file.fail(
            f"{file.row(int(first_rows[case]))}, column 'split': {quoted(split_names[case])} "
            f"is not one of {', '.join(SPLITS)}"
        )
    found = {
        split: everything.take(np.flatnonzero((split_names == split) & kept))
        for split in SPLITS
        if (split_names == split).any()
    }
    return found, rows


def series_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each row's series as a number 0, 1, ... in order of first appearance, and the ids.

    Numeric ids written series after series (as most exports are) are numbered from where
    they change, in one pass; anything else is hashed (pandas's factorize)."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column):
        ids = column.to_numpy()
        change = np.r_[True, ids[1:] != ids[:-1]]
        firsts = ids[change]
        if len(np.unique(firsts)) == len(firsts):  # no series comes back after another
            return np.cumsum(change) - 1, firsts
    codes, names = pd.factorize(column)
    return codes, np.asarray(names)


def per_series(
    file: DataFile,
    table: pd.DataFrame,
    column: str,
    order: np.ndarray | None,
    same_series: np.ndarray,
    starts: np.ndarray,
) -> np.ndarray:
    """A column that holds one value per series (its label, its split), checked to be the
    same on every row of the series: no row differs from the one before it in its series.
    Compared as integer codes: a million labels as Python strings would cost more memory
    than the whole table. `order` sorts the rows by series (None: they are sorted)."""
    import pandas as pd

    codes, uniques = pd.factorize(table[column])
    sorted_codes = codes if order is None else codes[order]
    differs = np.flatnonzero(same_series & (sorted_codes[1:] != sorted_codes[:-1]))
    if len(differs):
        at = int(differs[0]) + 1
        row = at if order is None else int(order[at])
        raise file.fail(
            f"{file.row(row)}, column '{column}': {quoted(uniques[sorted_codes[at]])}, but the "
            f"series's first row says {quoted(uniques[sorted_codes[at - 1]])}; a series has "
            f"one {column}"
        )
    values = np.asarray(uniques)[sorted_codes[starts]]
    return values.astype(str) if values.dtype == object else values


def dealt_splits(
    file: DataFile, found: dict[str, Cases], fractions: dict[str, float], seed: int
) -> dict[str, Cases]:
    """Every split: the file's own, and those it lacks dealt from its training cases at
    their fractions (train takes the rest), in the file's order within each."""
    if "train" not in found:
        raise file.fail("no rows in the train split: it is what the model learns from")
    missing = [split for split in ("validation", "test") if split not in found]
    if not missing:
        return found
    train = found["train"]
    shares = {split: fractions[split] for split in missing} | {"train": 0.0}
    dealt = seeded_split(file, len(train), shares, seed)
    return {
        split: train.take(np.sort(dealt[split])) if split in dealt else found[split]
        for split in SPLITS
    }


@dataclass
class PreparedSeries:
    """What the model trains on: standardised padded series and class indices per split."""

    arrays: dict[str, np.ndarray]  # series_<split>, labels_<split>, lengths_<split>, ...

    @property
    def classes(self) -> np.ndarray:
        return self.arrays["classes"]

    @property
    def channels(self) -> int:
        return int(self.arrays["series_train"].shape[2])

    @property
    def rows(self) -> int:
        return int(self.arrays["rows"])


def prepare_series_file(
    file: DataFile, fractions: dict[str, float], seed: int, nonfinite: str, padding: float
) -> PreparedSeries:
    """Read, check, split, index the classes and standardise a user's series file."""
    found, rows = read_cases(file, drop_nonfinite=nonfinite == "drop")
    if any(cases.labels.dtype.kind not in "iub" for cases in found.values()):
        for cases in found.values():  # labels compared as text where any is not an integer
            cases.labels = cases.labels.astype(str)
    for split, cases in found.items():
        if not len(cases):
            raise file.fail(f"no rows in the {split} split")
    splits = dealt_splits(file, found, fractions, seed)
    # Classes come from the training split alone: a class only the test split has could
    # not be learned, and its score would be a quiet zero.
    classes = np.unique(splits["train"].labels)
    arrays: dict[str, np.ndarray] = {"classes": classes, "rows": np.array(rows)}
    del found  # the splits hold what is used of it
    train = splits["train"]
    within = np.arange(train.series.shape[1]) < train.lengths[:, np.newaxis]
    frames = train.series[within]  # (frames, channels): the training cases' real steps
    mean, std = frames.mean(axis=0), frames.std(axis=0) + 1e-6
    del frames
    for split, cases in splits.items():
        index = np.searchsorted(classes, cases.labels).clip(0, len(classes) - 1)
        unseen = np.flatnonzero(classes[index] != cases.labels)
        if len(unseen):
            case = int(unseen[0])
            raise file.fail(
                f"{cases.where(case)}: label {quoted(cases.labels[case])} of the {split} split is "
                f"never in the train split (its classes: {', '.join(map(str, classes[:12]))})"
            )
        within = np.arange(cases.series.shape[1]) < cases.lengths[:, np.newaxis]
        standardised = cases.series  # each split's own array: standardised in place
        standardised -= mean
        standardised /= std
        standardised[~within] = padding
        arrays[f"series_{split}"] = standardised
        arrays[f"labels_{split}"] = index.astype(np.int64)
        arrays[f"lengths_{split}"] = cases.lengths
    return PreparedSeries(arrays)


def prepared(task_cfg: Any, data_dir: str) -> tuple[DataFile, str, dict[str, np.ndarray]]:
    """The file `task.source` names, the run's data hash, and its prepared arrays: from the
    cache when this content was prepared with these settings before, else read, checked and
    cached. Needs no TensorFlow, so `rnnlab train` checks a file before loading it."""
    file = DataFile.from_source(task_cfg.source, FORMATS)
    settings = {
        "validation_fraction": task_cfg.validation_fraction,
        "test_fraction": task_cfg.test_fraction,
        "nonfinite": task_cfg.nonfinite,
    }
    test_file = paired_test_file(file)
    if test_file is not None:  # the archive's pair: its test file is the run's data too
        settings["test_file"] = test_file.content_hash
    data_hash = file.data_hash(settings)
    cache = cache_path(data_dir, "series_classification", f"{data_hash}-{PREPARED_VERSION}")
    arrays = load_cached(cache)
    if arrays is None:
        fractions = {"validation": task_cfg.validation_fraction, "test": task_cfg.test_fraction}
        arrays = prepare_series_file(
            file, fractions, SPLIT_SEED, task_cfg.nonfinite, PADDING
        ).arrays
        save_cached(cache, arrays)
    return file, data_hash, arrays
