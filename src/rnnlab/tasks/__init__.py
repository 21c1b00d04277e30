"""The registry of tasks: `task.name` in the config picks the class that loads its data."""

from __future__ import annotations

from omegaconf import DictConfig

TASK_MODULES = {
    "sentiment": ("rnnlab.tasks.sentiment", "SentimentTask"),
    "adding": ("rnnlab.tasks.adding", "AddingTask"),
    "copy_memory": ("rnnlab.tasks.copy_memory", "CopyMemoryTask"),
    "forecasting": ("rnnlab.tasks.forecasting", "ForecastingTask"),
    "series_classification": ("rnnlab.tasks.series_classification", "SeriesClassificationTask"),
    "translation": ("rnnlab.tasks.translation", "TranslationTask"),
    "captioning": ("rnnlab.tasks.captioning", "CaptioningTask"),
}


def get_task(task_cfg: DictConfig, data_dir: str):
    """Instantiate the task named by task_cfg.name; imports only that task's module."""
    import importlib

    if task_cfg.name not in TASK_MODULES:
        raise ValueError(
            f"unknown task.name '{task_cfg.name}'; known: {', '.join(sorted(TASK_MODULES))}"
        )
    module_name, class_name = TASK_MODULES[task_cfg.name]
    return getattr(importlib.import_module(module_name), class_name)(task_cfg, data_dir)
