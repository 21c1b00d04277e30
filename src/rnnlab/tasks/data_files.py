"""A user's own data file as a task's source (`task.source=file:PATH`): found, read with
the library that reads its format, checked on the way in, and cached by content.

Every task that takes a file goes through here, so a bad file fails the same way for
all of them: one `DataFileError` line naming the file (and the row or column where one
is to blame), raised while loading, before a model is built or trained. The task turns
the checked table or arrays into its examples; what a file must hold is the task's own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnlab.config import PROJECT_ROOT, ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from rnnlab.tasks.base import DatasetRecord

FILE_PREFIX = "file:"
SPLITS = ("train", "validation", "test")

# A file's format, from its name's ending: what a user writes is what pandas reads.
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",  # sentence pairs as `source<TAB>target` lines, as Tatoeba's files are
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npz": "npz",
    ".ts": "ts",
}
TABLE_FORMATS = ("csv", "tsv", "jsonl", "parquet")


class DataFileError(ConfigError):
    """A user's data file cannot be used as it is; the one line says which file and why."""


def is_file_source(source: str | None) -> bool:
    return bool(source) and str(source).startswith(FILE_PREFIX)


@dataclass(frozen=True)
class DataFile:
    """A user's file, resolved and identified: what a run records of it and checks again."""

    path: Path  # absolute
    format: str  # a value of FORMATS
    content_hash: str  # SHA-256 of the bytes, 16 hex digits

    @classmethod
    def from_source(cls, source: str, formats: Sequence[str]) -> DataFile:
        """The file `task.source=file:PATH` names, relative to the working directory.

        `formats` are those the task reads; anything else fails here, before reading.
        """
        given = source.removeprefix(FILE_PREFIX).strip()
        if not given:
            raise DataFileError("task.source=file: names no file; write task.source=file:PATH")
        path = Path(given).expanduser().resolve()
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise DataFileError(f"{path}: {what} (task.source={source})")
        file_format = FORMATS.get(path.suffix.lower())
        if file_format is None or file_format not in formats:
            endings = ", ".join(sorted(ending for ending, f in FORMATS.items() if f in formats))
            raise DataFileError(
                f"{path}: unknown format '{path.suffix or path.name}'; this task reads {endings}"
            )
        return cls(path, file_format, file_hash(path))

    def fail(self, reason: str) -> DataFileError:
        """The error to raise for this file: `raise file.fail("no rows in the test split")`."""
        return DataFileError(f"{self.path}: {reason}")

    def row(self, index: int) -> str:
        """How a person finds a table's row `index` (from 0) in the file: the line an editor
        shows (after a CSV's header; a TSV's pairs have none), or Parquet's row number."""
        if self.format == "csv":
            return f"line {index + 2}"
        if self.format in ("tsv", "jsonl"):
            return f"line {index + 1}"
        return f"row {index}"

    def record(self, rows: int, name: str | None = None) -> DatasetRecord:
        """What the run logs of this file as its MLflow dataset input: where it is, its
        format, content hash and rows (a table's rows, or an array file's cases)."""
        from rnnlab.tasks.base import DatasetRecord

        profile = {"format": self.format, "content_hash": self.content_hash, "rows": rows}
        return DatasetRecord(name or self.path.name, str(self.path), profile)

    def data_hash(self, settings: dict | None = None) -> str:
        """The run's data hash: the file's content, and the task settings that change which
        examples it makes (a window, a split fraction), so `rnnlab evaluate` can check both."""
        if not settings:
            return self.content_hash
        digest = hashlib.sha256(self.content_hash.encode())
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:16]


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks so a large file costs no memory."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:16]


def read_table(
    file: DataFile,
    required: Iterable[str],
    setting: Callable[[str], str] = lambda column: f"task.{column}_column",
    text_as_categories: bool = False,
) -> pd.DataFrame:
    """The file as a pandas DataFrame with every `required` column, or one line saying
    what is wrong: unreadable or truncated, no rows, a column missing (and the setting
    that names it, from `setting(column)`).

    CSV is read by pyarrow's parser through pandas: several times faster than pandas's own
    on a million rows, and the same frame. With `text_as_categories`, a Parquet file's text
    columns come as categories, as Parquet stores them: a million labels cost a few bytes
    each, and grouping them costs nothing (CSV has no such store: parsing text to
    categories there is slower, so it reads text as text).
    """
    import pandas as pd

    try:
        if file.format == "csv":
            table = pd.read_csv(file.path, engine="pyarrow")
        elif file.format == "tsv":
            table = pd.read_csv(
                file.path, sep="\t", header=None, quoting=3, dtype=str, keep_default_na=False
            )
        elif file.format == "jsonl":
            table = pd.read_json(file.path, lines=True)
        elif file.format == "parquet":
            categories = text_columns(file.path) if text_as_categories else None
            table = pd.read_parquet(file.path, read_dictionary=categories)
        else:
            raise DataFileError(f"{file.path}: {file.format} is not a table format")
    except DataFileError:
        raise
    except Exception as error:  # pyarrow, pandas and the codecs each raise their own
        raise file.fail(f"unreadable as {file.format}: {first_line(error)}") from None
    finally:
        release_arrow_memory()
    if file.format != "tsv":
        require_columns(
            file, table.columns, required, lambda column: f"name it with {setting(column)}"
        )
    if table.empty:
        raise file.fail("no rows")
    return table


def text_columns(path: Path) -> list[str]:
    """The text columns of a Parquet file, from its footer alone."""
    import pyarrow
    import pyarrow.parquet

    schema = pyarrow.parquet.read_schema(path)
    text = (pyarrow.types.is_string, pyarrow.types.is_large_string)
    return [field.name for field in schema if any(check(field.type) for check in text)]


def release_arrow_memory() -> None:
    """Hand pyarrow's parse buffers back to the system: its allocator keeps them for reuse,
    and every array made after the read would otherwise come on top of them."""
    import pyarrow

    pyarrow.default_memory_pool().release_unused()


def require_columns(
    file: DataFile, columns: Iterable, required: Iterable[str], fix: Callable[[str], str]
) -> None:
    """Fail on the first `required` column the file lacks, listing those it has and how to
    mend it (`fix(column)`: a setting to name it with, or the header the task expects)."""
    present = [str(column) for column in columns]
    missing = [column for column in required if column not in present]
    if missing:
        listed = ", ".join(present[:12]) + (", ..." if len(present) > 12 else "")
        raise file.fail(f"no column '{missing[0]}' (its columns: {listed}); {fix(missing[0])}")


def read_npz(file: DataFile) -> dict[str, np.ndarray]:
    """The arrays of a NumPy `.npz` file, loaded without pickles where it has none.

    Object arrays are the exception, and only two kinds are kept: ragged series (an array
    of numeric arrays) and labels (strings or numbers, as `np.array(list_of_str, object)`
    makes them). Loading them unpickles, which can run code: it is the user's own file.
    """
    try:
        with np.load(file.path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as error:
        if "allow_pickle" not in str(error):
            raise file.fail(f"unreadable as npz: {first_line(error)}") from None
    except Exception as error:
        raise file.fail(f"unreadable as npz: {first_line(error)}") from None
    try:
        with np.load(file.path, allow_pickle=True) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as error:
        raise file.fail(f"unreadable as npz: {first_line(error)}") from None
    for name, array in arrays.items():
        if array.dtype != object:
            continue
        items = array.ravel().tolist()
        if all(isinstance(item, np.ndarray) and item.dtype.kind in "fiu" for item in items):
            continue  # ragged series
        if all(isinstance(item, str | int | float) for item in items):
            arrays[name] = np.array(items).reshape(array.shape)  # labels: a plain dtype
            continue
        raise file.fail(f"array '{name}' holds objects that are neither numeric arrays nor labels")
    return arrays


def quoted(value: object) -> str:
    """A value of the file as its line shows it: 'a', 3, never NumPy's np.str_('a')."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def require_finite(
    file: DataFile, values: np.ndarray, what: str, row_of: Callable[[int], str]
) -> None:
    """Fail on the first NaN or infinite value, naming its row (`row_of(index)` says how the
    file counts rows: a CSV line, an array index)."""
    bad = ~np.isfinite(values)
    if bad.any():
        index = int(np.argwhere(bad)[0][0])
        raise file.fail(f"{row_of(index)}: {what} is not finite; drop or fill it")


def deal(count: int, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Deal indices 0..count-1 into named splits by a fixed seed; the last split takes the rest.

    The seed is a constant of each task: changing it changes the test set of every past run.
    """
    order = np.random.default_rng(seed).permutation(count)
    names = list(fractions)
    bounds = np.cumsum([int(fractions[name] * count) for name in names[:-1]]).tolist()
    parts = np.split(order, bounds)
    for name, part in zip(names, parts, strict=True):
        if not len(part):
            raise ValueError(f"the {name} split is empty: {count} examples are too few to split")
    return dict(zip(names, parts, strict=True))


def seeded_split(
    file: DataFile, count: int, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Indices of a file without splits of its own, dealt by a seed the run records."""
    try:
        return deal(count, fractions, seed)
    except ValueError as error:
        raise file.fail(str(error)) from None


def cache_path(data_dir: str | Path, task: str, key: str) -> Path:
    """Where a task's prepared arrays of one file and settings live: `<data_dir>/cache/...`
    (a relative data_dir is the project's, as `datasets.data_root` reads it)."""
    root = Path(data_dir)
    root = root if root.is_absolute() else PROJECT_ROOT / root
    return root / "cache" / task / f"{key}.npz"


def load_cached(path: Path) -> dict[str, np.ndarray] | None:
    """Prepared arrays from an earlier run on the same file and settings, if any."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception:  # a cache half written by a killed run is only a cache: rebuild it
        return None


def save_cached(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the prepared arrays whole or not at all (a rename on one disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{np.random.default_rng().integers(1 << 30)}.partial.npz")
    with partial.open("wb") as stream:
        np.savez(stream, **arrays)  # type: ignore[arg-type]  # numpy's stub misreads **kwds
    partial.replace(path)
