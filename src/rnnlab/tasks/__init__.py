"""The registry of tasks: `task.name` in the config picks the class that loads its data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:  # the CLI imports this registry before TensorFlow: types only
    from rnnlab.tasks.base import Task, TaskData

TASK_MODULES = {
    "sentiment": ("rnnlab.tasks.sentiment", "SentimentTask"),
    "adding": ("rnnlab.tasks.adding", "AddingTask"),
    "copy_memory": ("rnnlab.tasks.copy_memory", "CopyMemoryTask"),
    "selective_copying": ("rnnlab.tasks.selective_copying", "SelectiveCopyingTask"),
    "associative_recall": ("rnnlab.tasks.associative_recall", "AssociativeRecallTask"),
    "forecasting": ("rnnlab.tasks.forecasting", "ForecastingTask"),
    "series_classification": ("rnnlab.tasks.series_classification", "SeriesClassificationTask"),
    "translation": ("rnnlab.tasks.translation", "TranslationTask"),
    "captioning": ("rnnlab.tasks.captioning", "CaptioningTask"),
}

if TYPE_CHECKING:
    # `get_task` builds its classes through importlib, which the checker sees as Any: this
    # table, read by the checker only, holds each registered class to the Task protocol. A
    # missing member makes the class abstract ("Only concrete class can be given"), a wrong
    # signature an override error. tests/test_task_registry.py keeps it equal to TASK_MODULES.
    from rnnlab.tasks.adding import AddingTask
    from rnnlab.tasks.associative_recall import AssociativeRecallTask
    from rnnlab.tasks.captioning import CaptioningTask
    from rnnlab.tasks.copy_memory import CopyMemoryTask
    from rnnlab.tasks.forecasting import ForecastingTask
    from rnnlab.tasks.selective_copying import SelectiveCopyingTask
    from rnnlab.tasks.sentiment import SentimentTask
    from rnnlab.tasks.series_classification import SeriesClassificationTask
    from rnnlab.tasks.translation import TranslationTask

    REGISTERED: dict[str, type[Task]] = {
        "sentiment": SentimentTask,
        "adding": AddingTask,
        "copy_memory": CopyMemoryTask,
        "selective_copying": SelectiveCopyingTask,
        "associative_recall": AssociativeRecallTask,
        "forecasting": ForecastingTask,
        "series_classification": SeriesClassificationTask,
        "translation": TranslationTask,
        "captioning": CaptioningTask,
    }


def get_task(task_cfg: DictConfig, data_dir: str) -> Task:
    """Instantiate the task named by task_cfg.name; imports only that task's module."""
    import importlib

    if task_cfg.name not in TASK_MODULES:
        raise ValueError(
            f"unknown task.name '{task_cfg.name}'; known: {', '.join(sorted(TASK_MODULES))}"
        )
    module_name, class_name = TASK_MODULES[task_cfg.name]
    return getattr(importlib.import_module(module_name), class_name)(task_cfg, data_dir)


# The modules that read a task's own file (`task.source=file:PATH`) without TensorFlow: each
# has `prepared(task_cfg, data_dir)`, which reads, checks and caches the file.
FILE_READERS = {
    "series_classification": "rnnlab.tasks.series_classification_files",
    "forecasting": "rnnlab.tasks.forecasting_files",
}


def check_data_file(task_cfg: DictConfig, data_dir: str) -> None:
    """Read, check and cache the task's own file, if it has one, before TensorFlow loads:
    a bad file is one line (DataFileError) in seconds, and the run then starts from the
    cache. A task without a reader here checks its file as it loads."""
    import importlib

    from rnnlab.tasks.data_files import is_file_source

    reader = FILE_READERS.get(task_cfg.name)
    if reader is not None and is_file_source(task_cfg.get("source")):
        importlib.import_module(reader).prepared(task_cfg, data_dir)


def file_identity(task_cfg: DictConfig) -> tuple:
    """What tells whether the task's own file changed since it was last loaded here (its
    size and modification time: hashing it again would cost a read); () for no file."""
    from pathlib import Path

    from rnnlab.tasks.data_files import FILE_PREFIX, is_file_source

    source = task_cfg.get("source")
    if not is_file_source(source):
        return ()
    path = Path(str(source).removeprefix(FILE_PREFIX).strip()).expanduser().resolve()
    status = path.stat() if path.is_file() else None
    return (str(path), status.st_size, status.st_mtime_ns) if status else (str(path),)


_LOADED: dict[tuple, tuple[Task, TaskData]] = {}  # the last load_task call's key and result


def load_task(
    task_cfg: DictConfig, data_dir: str, batch_size: int, seed: int
) -> tuple[Task, TaskData]:
    """The task and its data, loaded once per process for the same arguments.

    A sweep's trials share a worker process and usually the task config: reading,
    vectorising and caching the data again would cost every trial seconds. A repeat gets
    the same examples with `train` freshly shuffled from the seed, the order a new process
    would see. Only the last load is kept, so memory holds one task's data.
    """
    key = (
        OmegaConf.to_yaml(task_cfg, resolve=True),
        str(data_dir),
        batch_size,
        seed,
        file_identity(task_cfg),  # the same path with new content is other data
    )
    if key in _LOADED:
        task, data = _LOADED[key]
        return task, data.reshuffled()
    task = get_task(task_cfg, data_dir)
    data = task.load(batch_size=batch_size, seed=seed)
    _LOADED.clear()
    _LOADED[key] = (task, data)
    return task, data
