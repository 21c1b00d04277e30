"""Series classification: which class does a (multivariate, variable-length) series belong to?

The UCR/UEA archive files come from the sktime wheel, unzipped without importing sktime.
JapaneseVowels is the default because it is the recurrent test among them: 9 speakers,
12 cepstral coefficients per frame, 7 to 29 frames, so padding must be masked. The
archive's own train/test split is kept; a fixed fifth of its train cases is validation.

`task.source=file:PATH` reads a user's file instead (series_classification_files.py says
which files): its channels and classes come from the file, its arrays are cached by content.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from keras import layers
from omegaconf import DictConfig

from rnnlab.config import ConfigError
from rnnlab.tasks import datasets
from rnnlab.tasks.base import (
    DatasetRecord,
    TaskData,
    TaskDefaults,
    batched_task_data,
    deal,
    majority_class_baseline,
)
from rnnlab.tasks.data_files import DataFile, is_file_source
from rnnlab.tasks.series_classification_files import PADDING, SPLIT_SEED, read_ts

SOURCE_REQUIREMENT = "sktime==1.2.0"
SOURCE_FOLDER = "sktime/datasets/data"
VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class UcrSet:
    dimensions: int
    classes: tuple[str, ...]
    description: str


UCR_SETS = {
    "JapaneseVowels": UcrSet(
        12, tuple("123456789"), "Nine speakers' /ae/, 12 LPC cepstra per frame, 7-29 frames."
    ),
    "GunPoint": UcrSet(1, ("1", "2"), "Hand position while drawing a gun or pointing, 150 steps."),
    "ItalyPowerDemand": UcrSet(1, ("1", "2"), "Daily Italian power demand, winter or summer."),
    "BasicMotions": UcrSet(
        6,
        ("Standing", "Running", "Walking", "Badminton"),
        "Smart-watch accelerometer and gyroscope, 100 steps.",
    ),
    "ArrowHead": UcrSet(1, ("0", "1", "2"), "Outlines of arrowheads, 251 steps."),
}


class UcrArchive(tfds.core.GeneratorBasedBuilder):
    """One config per UCR set: each case a (steps, dimensions) float tensor and its class."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Archive train/test split; a fixed 20% of train is validation."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Run `make install` (or `rnnlab prepare`) to fetch the files."
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=name, description=ucr.description)
        for name, ucr in UCR_SETS.items()
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        ucr = UCR_SETS[self.builder_config.name]
        return tfds.core.DatasetInfo(
            builder=self,
            description="A time series classification set of the UCR/UEA archive.",
            features=tfds.features.FeaturesDict(
                {
                    "series": tfds.features.Tensor(shape=(None, ucr.dimensions), dtype=np.float32),
                    "label": tfds.features.ClassLabel(names=ucr.classes),
                }
            ),
            supervised_keys=("series", "label"),
            homepage="https://www.timeseriesclassification.com",
            citation="Dau, H.A. et al. (2019). The UCR time series archive. IEEE/CAA Journal "
            "of Automatica Sinica 6(6). Bagnall, A. et al. (2018). The UEA multivariate "
            "time series classification archive. arXiv:1811.00075.",
            license="Cite the archive; research use",
        )

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[int, dict]]]:
        name = self.builder_config.name
        folder = Path(dl_manager.manual_dir) / name
        train = read_ts(folder / f"{name}_TRAIN.ts")
        test = read_ts(folder / f"{name}_TEST.ts")
        held_out = deal(
            len(train[0]),
            {"train": 1 - VALIDATION_FRACTION, "validation": VALIDATION_FRACTION},
            SPLIT_SEED,
        )
        return {
            "train": self._generate_examples(train, sorted(held_out["train"])),
            "validation": self._generate_examples(train, sorted(held_out["validation"])),
            "test": self._generate_examples(test, range(len(test[0]))),
        }

    def _generate_examples(
        self, cases_and_labels: tuple[list[np.ndarray], list[str]], indices: Iterable[int]
    ) -> Iterator[tuple[int, dict]]:
        cases, labels = cases_and_labels
        for index in indices:
            yield int(index), {"series": cases[index], "label": labels[index]}


class SeriesClassificationTask(TaskDefaults):
    """Masked recurrent stack over standardised frames, softmax over the classes."""

    loss = "sparse_categorical_crossentropy"
    metrics = ("accuracy",)

    def __init__(self, cfg: DictConfig, data_dir: str) -> None:
        if cfg.dataset not in UCR_SETS:
            raise ConfigError(f"unknown task.dataset '{cfg.dataset}'; known: {', '.join(UCR_SETS)}")
        self.cfg = cfg
        self.root = datasets.data_root(data_dir)
        self.data_dir = data_dir
        self.builder = UcrArchive(config=cfg.dataset, data_dir=str(self.root / "tfds"))
        self.steps = 0
        # A user's file (read by load): the file, its channel count, classes and rows.
        self.file: DataFile | None = None
        self.channels = UCR_SETS[cfg.dataset].dimensions
        self.classes: tuple[str, ...] = UCR_SETS[cfg.dataset].classes
        self.rows = 0

    def prepare(self) -> None:
        raw = self.root / "raw" / "series_classification"
        datasets.fetch_wheel_folder(SOURCE_REQUIREMENT, SOURCE_FOLDER, raw)
        for name in UCR_SETS:
            datasets.prepare(UcrArchive(config=name, data_dir=str(self.root / "tfds")), raw)

    def load(self, batch_size: int, seed: int) -> TaskData:
        if is_file_source(self.cfg.source):
            return self.load_file(batch_size, seed)
        datasets.require_prepared(self.builder)
        splits = {}
        for name in ("train", "validation", "test"):
            examples = self.builder.as_dataset(split=name, as_supervised=True)
            if self.cfg.max_examples is not None:
                examples = examples.take(self.cfg.max_examples)
            splits[name] = list(tfds.as_numpy(examples))
        # Each channel is standardised with the training cases' statistics only.
        frames = np.concatenate([series for series, _ in splits["train"]])
        mean, std = frames.mean(axis=0), frames.std(axis=0) + 1e-6
        self.steps = max(len(series) for split in splits.values() for series, _ in split)
        padded = {name: self._pad(split, mean, std) for name, split in splits.items()}
        return batched_task_data(padded, batch_size, seed, datasets.content_hash(self.builder))

    def load_file(self, batch_size: int, seed: int) -> TaskData:
        """A user's file, prepared once per content and settings, then read from the cache."""
        from rnnlab.tasks.series_classification_files import prepared

        self.file, data_hash, arrays = prepared(self.cfg, self.data_dir)
        self.classes = tuple(str(name) for name in arrays["classes"])
        self.channels = int(arrays["series_train"].shape[2])
        self.rows = int(arrays["rows"])
        count = self.cfg.max_examples
        names = ("train", "validation", "test")
        lengths = {split: arrays[f"lengths_{split}"][:count] for split in names}
        self.steps = int(max(part.max() for part in lengths.values()))
        splits = {
            split: tf.data.Dataset.from_tensor_slices(
                (arrays[f"series_{split}"][:count, : self.steps], arrays[f"labels_{split}"][:count])
            )
            for split in names
        }
        return batched_task_data(splits, batch_size, seed, data_hash)

    def _pad(
        self, cases: list[tuple[np.ndarray, int]], mean: np.ndarray, std: np.ndarray
    ) -> tf.data.Dataset:
        """Standardise each case and pad it at the end to the longest case of the set."""
        dimensions = UCR_SETS[self.cfg.dataset].dimensions
        series = np.full((len(cases), self.steps, dimensions), PADDING, dtype=np.float32)
        for row, (case, _) in enumerate(cases):
            series[row, : len(case)] = (case - mean) / std
        labels = np.array([label for _, label in cases], dtype=np.int64)
        return tf.data.Dataset.from_tensor_slices((series, labels))

    def build_model(
        self, recurrent: Callable[[keras.KerasTensor], keras.KerasTensor]
    ) -> keras.Model:
        # The channels and classes are the UCR set's, or those `load` found in a user's file.
        series = keras.Input(shape=(None, self.channels), name="series")
        # Frames that are all padding are skipped: the cell ends at each case's last frame.
        masked = layers.Masking(mask_value=PADDING, name="mask_padding")(series)
        summary = recurrent(masked)
        classes = layers.Dense(len(self.classes), activation="softmax", name="classes")(summary)
        return keras.Model(series, classes, name="series_classification")

    def evaluate_extra(
        self, model: keras.Model, data: TaskData
    ) -> tuple[dict[str, float], dict[str, str]]:
        return majority_class_baseline(data), {}

    def dataset_record(self) -> DatasetRecord:
        if self.file is not None:
            return self.file.record(self.rows)
        return super().dataset_record()
