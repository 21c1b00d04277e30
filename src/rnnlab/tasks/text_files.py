"""A user's file of texts as a text task's data (`task.source=file:PATH`): labelled texts
for sentiment (text classification), sentence pairs for translation.

`data_files` finds and reads the file; this module knows what a text task needs of it:
a text in every cell it reads, each row in a split (the file's own `split` column, else a
deal by the task's seed and fractions), and, for labels, classes the training split
defines. Every problem is one `DataFileError` line naming the file and the row or line,
raised while loading, before a model is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnlab.tasks.data_files import SPLITS, DataFile, read_table, seeded_split

if TYPE_CHECKING:
    import pandas as pd
    from omegaconf import DictConfig

SPLIT_COLUMN = "split"  # a file's own split: train, validation or test on each row
LABELLED_FORMATS = ("csv", "jsonl", "parquet")
PAIR_FORMATS = ("tsv", "csv", "jsonl", "parquet")
PAIR_LINE = "source<TAB>target"


def row_name(file: DataFile, index: int) -> str:
    """How a person finds the table's row `index` in the file: a line of a JSON Lines or
    tab-separated file (whose blank lines pandas skips), else a row counted from 1 after
    the header (a CSV text may span lines, so its line number would mislead)."""
    if file.format == "jsonl":
        return f"line {index + 1}"
    if file.format == "tsv":
        return f"line {tsv_line(file, index)[0]}"
    return f"row {index + 1}"


def tsv_line(file: DataFile, index: int) -> tuple[int, str]:
    """The number and text of the `index`-th non-blank line, as pandas counted rows.

    Read again only when a row is to blame, so a good file is read once."""
    with file.path.open(encoding="utf-8", errors="replace", newline="") as lines:
        seen = -1
        for number, line in enumerate(lines, start=1):
            text = line.rstrip("\r\n")
            if text:
                seen += 1
                if seen == index:
                    return number, text
    return index + 1, ""


def split_frames(file: DataFile, table: pd.DataFrame, cfg: DictConfig) -> dict[str, pd.DataFrame]:
    """The table's rows by split: its `split` column's, else dealt by `task.split_seed` at
    `task.validation_fraction` and `task.test_fraction` (train takes the rest). The rows keep
    their index in the file, so an error can name the row."""
    if SPLIT_COLUMN in table.columns:
        named = table[SPLIT_COLUMN].astype(str).str.strip().str.lower()
        unknown = ~named.isin(SPLITS)
        if unknown.any():
            index = int(np.flatnonzero(unknown.to_numpy())[0])
            raise file.fail(
                f"{row_name(file, index)}: split {table[SPLIT_COLUMN].iloc[index]!r} in column "
                f"'{SPLIT_COLUMN}' is none of {', '.join(SPLITS)}"
            )
        frames = {name: table[(named == name).to_numpy()] for name in SPLITS}
        for name, frame in frames.items():
            if frame.empty:
                raise file.fail(f"no rows in the {name} split (column '{SPLIT_COLUMN}')")
        return frames
    fractions = {
        "validation": cfg.validation_fraction,
        "test": cfg.test_fraction,
        "train": 1.0 - cfg.validation_fraction - cfg.test_fraction,
    }
    # train last: `deal` gives the last split what rounding leaves; each split in file order.
    dealt = seeded_split(file, len(table), fractions, cfg.split_seed)
    return {name: table.iloc[np.sort(dealt[name])] for name in SPLITS}


def split_settings(table: pd.DataFrame, cfg: DictConfig, columns: Sequence[str]) -> dict[str, Any]:
    """The task settings that decide which examples the file makes: part of the data hash,
    so `rnnlab evaluate` finds a run's data changed if a column or the split changed."""
    settings: dict[str, Any] = {"columns": list(columns)}
    if SPLIT_COLUMN in table.columns:
        return settings | {"split": SPLIT_COLUMN}
    keys = ("validation_fraction", "test_fraction", "split_seed")
    return settings | {key: cfg[key] for key in keys}


def require_unicode(file: DataFile, table: pd.DataFrame, column: str | int) -> None:
    """One line naming the first row whose cell is not UTF-8 text, if any: pyarrow reads a
    CSV column with bytes that are not UTF-8 as a column of raw bytes, not as an error."""
    if table[column].dtype != object:
        return
    raw = table[column].map(lambda value: isinstance(value, bytes) and not is_utf8(value))
    if raw.any():
        index = int(np.flatnonzero(raw.to_numpy())[0])
        raise file.fail(
            f"{row_name(file, index)}: column '{column}' is not UTF-8 text; save the file as UTF-8"
        )


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def require_texts(file: DataFile, table: pd.DataFrame, column: str | int, what: str) -> None:
    """One line naming the first row whose text is missing, blank or not UTF-8, if any."""
    require_unicode(file, table, column)
    values = table[column]
    empty = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        index = int(np.flatnonzero(empty)[0])
        if file.format == "tsv":
            number, line = tsv_line(file, index)
            if "\t" not in line:
                raise file.fail(f"line {number} has no tab: expected {PAIR_LINE}")
        raise file.fail(f"{row_name(file, index)}: empty {what}")


def texts(frame: pd.DataFrame, column: str | int) -> list[str]:
    return frame[column].astype(str).tolist()


def read_labelled_texts(
    file: DataFile, cfg: DictConfig
) -> tuple[dict[str, tuple[list[str], np.ndarray]], list[str], dict[str, Any]]:
    """(split -> (texts, class indices), class names, settings for the data hash).

    The classes are the training split's labels, sorted (as numbers where all are): a
    label the training split lacks, in validation or test, could never be predicted, so
    it is an error naming its row."""
    text_column, label_column = cfg.text_column, cfg.label_column
    table = read_table(file, (text_column, label_column))
    require_texts(file, table, text_column, f"text in column '{text_column}'")
    labels = label_values(file, table, label_column)
    frames = split_frames(file, table, cfg)
    if cfg.max_examples is not None:
        frames = {name: frame.iloc[: cfg.max_examples] for name, frame in frames.items()}
    classes = sorted(set(labels[frames["train"].index]))
    if len(classes) < 2:
        raise file.fail(
            f"the training split has one class ({str(classes[0])!r} in column "
            f"'{label_column}'): a classifier needs two or more"
        )
    index_of = {label: index for index, label in enumerate(classes)}
    splits = {}
    for name, frame in frames.items():
        indices = labels[frame.index].map(index_of)
        unseen = indices.isna().to_numpy()
        if unseen.any():
            index = int(frame.index[np.flatnonzero(unseen)[0]])
            raise file.fail(
                f"{row_name(file, index)}: {name} label {str(labels[index])!r} (column "
                f"'{label_column}') is never in the training split, so no model could predict it"
            )
        splits[name] = (texts(frame, text_column), indices.to_numpy(dtype=np.int64))
    names = [str(label) for label in classes]
    return splits, names, split_settings(table, cfg, (text_column, label_column))


def label_values(file: DataFile, table: pd.DataFrame, column: str) -> pd.Series:
    """The column's labels as sortable values: numbers where the column is numeric (whole
    floats, as a numeric column with a gap reads, as ints), else text."""
    import pandas as pd

    require_unicode(file, table, column)
    values = table[column]
    missing = values.isna().to_numpy()
    if missing.any():
        raise file.fail(
            f"{row_name(file, int(np.flatnonzero(missing)[0]))}: no label in column '{column}'"
        )
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return values.astype(str).str.strip()
    if pd.api.types.is_float_dtype(values) and bool((values == values.round()).all()):
        return values.astype(np.int64)
    return values


def read_sentence_pairs(
    file: DataFile, cfg: DictConfig
) -> tuple[dict[str, tuple[list[str], list[str]]], dict[str, Any]]:
    """(split -> (source texts, target texts), settings for the data hash).

    A tab-separated file is `source<TAB>target` lines without a header (further columns, as
    in Tatoeba's downloads, are ignored); a table names its two columns."""
    sides: dict[str | int, str]  # column -> what an empty cell of it is
    if file.format == "tsv":
        table = read_table(file, ())
        if len(table.columns) < 2:
            raise file.fail(f"line {tsv_line(file, 0)[0]} has no tab: expected {PAIR_LINE}")
        sides = {0: "source text", 1: "target text"}
    else:
        named = (cfg.source_column, cfg.target_column)
        table = read_table(file, named)
        sides = {column: f"text in column '{column}'" for column in named}
    for column, what in sides.items():
        require_texts(file, table, column, what)
    columns = list(sides)
    splits = {
        name: (texts(frame, columns[0]), texts(frame, columns[1]))
        for name, frame in split_frames(file, table, cfg).items()
    }
    return splits, split_settings(table, cfg, [str(column) for column in columns])
