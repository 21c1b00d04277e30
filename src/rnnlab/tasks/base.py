"""What a task is to the rest of rnnlab (`Task`), and what it hands to the trainer:
batched splits and the facts a run records."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from omegaconf import DictConfig

from rnnlab.config import ConfigError
from rnnlab.tasks import datasets
from rnnlab.tasks.data_files import deal as deal  # the tasks' dealer, without TensorFlow

if TYPE_CHECKING:  # only a type: the recurrence loads with the model, not with the data
    from rnnlab.recurrence.stack import RecurrentStack


class NoPredictError(ConfigError):
    """The task's inputs are not something a person types (`rnnlab predict` says so)."""


@dataclass(frozen=True)
class DatasetRecord:
    """What MLflow's dataset column shows for a run: name and version, and where it lives."""

    name: str  # e.g. rotten_tomatoes_snippets/1.0.0, or the generator of synthetic data
    location: str | None  # the prepared TFDS folder or a user's file; None: generated, catalog
    # A user's file (`DataFile.record`): its format, content hash and rows, shown as the
    # dataset's profile in MLflow; None for the built-in sets, whose name says it all.
    profile: dict | None = None


@runtime_checkable
class Task(Protocol):
    """Everything `train.run`, `rnnlab evaluate` and `rnnlab predict` use of a task.

    A task knows its data and the model's ends (inputs, outputs); the cell in the middle
    comes from the config. `TaskDefaults` gives the optional parts a default, and every
    task derives from it, so a type checker holds each task's methods to these.
    """

    cfg: Any  # the `task` config group
    has_decoder: bool  # True: build_model also takes a `decoder` stack of the cell

    @property
    def loss(self) -> Any:
        """A Keras loss: its name, or a function of (targets, predictions)."""
        ...

    @property
    def metrics(self) -> Sequence:
        """Keras metrics beyond the loss (names or metric objects)."""
        ...

    def prepare(self) -> None:
        """Fetch and build the task's data set (`rnnlab prepare`); generated data: nothing."""
        ...

    def load(self, batch_size: int, seed: int) -> TaskData:
        """The batched splits, with what `build_model` and `predict` need (vocabularies)."""
        ...

    def build_model(self, recurrent: RecurrentStack) -> keras.Model:
        """The model around `recurrent`, a stack of the configured cell. A task with
        `has_decoder` also takes `decoder`, a second stack, for the text it writes."""
        ...

    def evaluate_extra(
        self, model: keras.Model, data: TaskData
    ) -> tuple[dict[str, float], dict[str, str]]:
        """Test metrics `evaluate` cannot give (baselines, BLEU) and text artifacts."""
        ...

    def input_state(self) -> dict[str, Any]:
        """What turns a person's input into the model's, beyond the model (vocabularies)."""
        ...

    def restore_inputs(self, state: dict[str, Any]) -> None:
        """Take back an `input_state`, so a stored model predicts without `load`."""
        ...

    def predict(self, model: keras.Model, inputs: list[str]) -> list:
        """The model's answers to raw inputs (texts, a CSV file's values)."""
        ...

    def prediction_lines(self, inputs: list[str], answers: list) -> list[str]:
        """What `rnnlab predict` prints: each answer beside what it answers."""
        ...

    def predict_example(self) -> list | None:
        """Inputs `predict` takes (the stored model's input example); None: no predict."""
        ...

    def dataset_record(self) -> DatasetRecord:
        """What MLflow records as the run's data set."""
        ...


class TaskDefaults(Task):
    """The defaults of `Task`'s optional parts: no decoder, no extra metrics, no predict."""

    cfg: Any
    builder: tfds.core.DatasetBuilder  # the prepared data set, for the tasks that have one
    has_decoder = False

    def evaluate_extra(
        self, model: keras.Model, data: TaskData
    ) -> tuple[dict[str, float], dict[str, str]]:
        return {}, {}

    def input_state(self) -> dict[str, Any]:
        return {}  # the model holds all it needs (e.g. a Normalization layer)

    def restore_inputs(self, state: dict[str, Any]) -> None:
        """Nothing to restore: see input_state."""

    def predict(self, model: keras.Model, inputs: list[str]) -> list:
        raise NoPredictError(
            f"task '{self.cfg.name}' has no predict: its inputs are not something a person "
            "types; `rnnlab evaluate RUN_ID` scores the stored model on its test split"
        )

    def prediction_lines(self, inputs: list[str], answers: list) -> list[str]:
        return [f"{answer}\t{given}" for given, answer in zip(inputs, answers, strict=True)]

    def predict_example(self) -> list | None:
        return None

    def dataset_record(self) -> DatasetRecord:
        """The prepared TFDS set (`self.builder`), or the catalog set `task.source` names."""
        source = self.cfg.get("source", "embedded")
        if source.startswith("tfds:"):
            return DatasetRecord(source.removeprefix("tfds:"), None)
        builder = self.builder
        return DatasetRecord(builder.info.full_name, str(builder.data_dir))


# Bucket boundaries (in steps) for sequences batched by length: most sentences and
# captions are 4-16 tokens, so a batch pads to its own longest instead of to the longest.
LENGTH_BOUNDARIES = (6, 8, 10, 12, 14, 17)


@dataclass
class TaskData:
    train: tf.data.Dataset  # shuffled each epoch, batched, prefetched
    validation: tf.data.Dataset  # for early stopping and tuning
    test: tf.data.Dataset  # held out: evaluated once, at the end
    train_size: int
    data_hash: str  # identifies the prepared data the run trained on
    # What `reshuffled` makes `train` from: the cached examples, batch size and seed.
    train_examples: tf.data.Dataset | None = None
    batch_size: int = 0
    seed: int = 0
    length_of: Callable | None = None  # an example's length, for batching by length

    def reshuffled(self) -> TaskData:
        """This data with `train` shuffling as if newly loaded, from the same cached examples.

        A shuffle draws a new order for each pass over it, so a second run over the same
        `train` would see other orders than a first one: reuse needs a fresh shuffle.
        """
        fresh = batches(self.train_examples, self.batch_size, self.seed, self.length_of)
        return dataclasses.replace(self, train=fresh)


def split_labels(split: tf.data.Dataset) -> np.ndarray:
    """Every target of an (input, target) split, batched or not, as one integer array."""
    return np.concatenate([np.reshape(labels, -1) for _, labels in tfds.as_numpy(split)]).astype(
        np.int64
    )


def majority_class_baseline(data: TaskData) -> dict[str, float]:
    """The accuracy of always answering the training split's most common class.

    The floor a classifier must clear before its score means anything.
    """
    most_common = np.bincount(split_labels(data.train_examples)).argmax()
    return {"baseline_accuracy": float(np.mean(split_labels(data.test) == most_common))}


def batches(
    cached: tf.data.Dataset,
    batch_size: int,
    shuffle_seed: int | None = None,
    length_of: Callable | None = None,
) -> tf.data.Dataset:
    """Shuffle if training, batch and prefetch.

    Examples of variable length are padded to the longest of their batch. With
    `length_of`, they are also grouped by it into buckets, so a translation batch's
    decoder runs about 11 steps, not 20; captions, whose length tells their category, are
    better mixed (bucketed batches cost their BLEU 4-9 points).
    """
    batched = batched_examples(cached, batch_size, length_of)
    if shuffle_seed is not None:
        shuffled = cached.shuffle(16_384, seed=shuffle_seed, reshuffle_each_iteration=True)
        batched = batched_examples(shuffled, batch_size, length_of).apply(
            tf.data.experimental.assert_cardinality(batched.cardinality())
        )
    return batched.prefetch(tf.data.AUTOTUNE)


def batched_examples(
    examples: tf.data.Dataset, batch_size: int, length_of: Callable | None
) -> tf.data.Dataset:
    """Padded batches, by length where `length_of` says, of a length Keras knows.

    tf.data cannot tell how many batches buckets make, and Keras then warns at the end of
    every epoch that its "input ran out of data". Their number is counted once: it depends
    only on each example's length, so a shuffled order makes as many.
    """
    if length_of is None:
        batched = examples.padded_batch(batch_size)  # the same as batch() for fixed shapes
    else:
        batched = examples.bucket_by_sequence_length(
            length_of, list(LENGTH_BOUNDARIES), [batch_size] * (len(LENGTH_BOUNDARIES) + 1)
        )
    if batched.cardinality() >= 0:
        return batched
    return batched.apply(tf.data.experimental.assert_cardinality(example_count(batched)))


def batched_task_data(
    splits: dict[str, tf.data.Dataset],
    batch_size: int,
    seed: int,
    data_hash: str,
    length_of: Callable | None = None,
) -> TaskData:
    """TaskData from unbatched train/validation/test splits, cached in memory after their
    first pass; only train is shuffled. `length_of` batches by length (see `batches`)."""
    cached = {name: split.cache() for name, split in splits.items()}
    return TaskData(
        train=batches(cached["train"], batch_size, seed, length_of),
        validation=batches(cached["validation"], batch_size, length_of=length_of),
        test=batches(cached["test"], batch_size, length_of=length_of),
        train_size=example_count(splits["train"]),
        data_hash=data_hash,
        train_examples=cached["train"],
        batch_size=batch_size,
        seed=seed,
        length_of=length_of,
    )


def first_examples(
    split: tf.data.Dataset, count: int
) -> tuple[tf.Tensor | tuple[tf.Tensor, ...], tf.Tensor]:
    """The first `count` examples of a batched split as one batch, padded to the longest:
    (inputs, targets), the inputs a tuple for a model of several inputs."""
    return next(iter(split.unbatch().padded_batch(count)))


def example_count(split: tf.data.Dataset) -> int:
    """The split's size: known to tf.data for most pipelines, else counted in one pass."""
    known = int(split.cardinality())
    return known if known >= 0 else int(split.reduce(0, lambda count, _: count + 1))


def supervised_splits(
    builder: tfds.core.DatasetBuilder, source: str, catalog_splits: dict[str, str]
) -> tuple[dict[str, tf.data.Dataset], str]:
    """(input, target) splits and the data hash: prepared, or `tfds:<name>` from the catalog.

    `catalog_splits` maps our split names to the catalog set's (`train[:90%]`). TFDS
    downloads a catalog set on first use, so that path needs a network; tests mock it.
    """
    if source.startswith("tfds:"):
        name = source.removeprefix("tfds:")
        loaded = tfds.load(name, split=list(catalog_splits.values()), as_supervised=True)
        return dict(zip(catalog_splits, loaded, strict=True)), source
    datasets.require_prepared(builder)
    splits = {name: builder.as_dataset(split=name, as_supervised=True) for name in catalog_splits}
    return splits, datasets.content_hash(builder)


def take_each(splits: dict[str, tf.data.Dataset], count: int | None) -> dict[str, tf.data.Dataset]:
    """The first `count` examples of each split (`task.max_examples`); None keeps all."""
    if count is None:
        return splits
    return {name: split.take(count) for name, split in splits.items()}


def arrays_hash(*arrays: np.ndarray) -> str:
    """SHA-256 of generated arrays: identifies synthetic data as content_hash does files."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def task_data_from_arrays(
    splits: dict[str, tuple[np.ndarray, np.ndarray]], batch_size: int, seed: int
) -> TaskData:
    """TaskData from {'train': (inputs, targets), 'validation': ..., 'test': ...} arrays."""
    for name, (inputs, _) in splits.items():
        if len(inputs) == 0:
            raise ValueError(f"the {name} split is empty: raise its size in the task config")
    pipelines = {
        name: tf.data.Dataset.from_tensor_slices(arrays) for name, arrays in splits.items()
    }
    data_hash = arrays_hash(*(array for arrays in splits.values() for array in arrays))
    return batched_task_data(pipelines, batch_size, seed, data_hash)


class SyntheticTask(TaskDefaults):
    """A task whose data a `generate(examples, rng)` method makes from the run's seed.

    Each split has its own random stream, so the test set never overlaps training and a
    rerun with the same seed sees the same examples.
    """

    SPLITS = ("train", "validation", "test")

    def __init__(self, cfg: DictConfig, data_dir: str) -> None:
        self.cfg = cfg
        self.test_split: tuple[np.ndarray, np.ndarray] | None = None

    def prepare(self) -> None:
        """Nothing to prepare: the data is generated from the seed."""

    def generate(self, examples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of `examples` examples drawn from `rng`."""
        raise NotImplementedError

    def load(self, batch_size: int, seed: int) -> TaskData:
        splits = {}
        for index, name in enumerate(self.SPLITS):
            examples = self.cfg[f"{name}_examples"]
            if self.cfg.max_examples is not None:
                examples = min(examples, self.cfg.max_examples)
            splits[name] = self.generate(examples, np.random.default_rng([seed, index]))
        self.test_split = splits["test"]
        return task_data_from_arrays(splits, batch_size, seed)

    def dataset_record(self) -> DatasetRecord:
        """Generated from the seed: the generator and its config name the data."""
        settings = ", ".join(f"{key}={value}" for key, value in self.cfg.items() if key != "name")
        return DatasetRecord(f"{self.cfg.name} ({settings})", None)


def answers_at_the_end(
    recurrent: RecurrentStack, steps: int, symbols: int, answers: int, classes: int, name: str
) -> keras.Model:
    """A model of one-hot `symbols`-wide sequences of `steps` steps that answers at the last
    `answers` steps only, with a softmax over `classes`: the recall tasks, whose questions
    come at the end and whose loss must not be diluted by the steps that ask nothing."""
    from keras import layers

    sequence = keras.Input(shape=(steps, symbols), name="symbols")
    states = recurrent(sequence, return_sequences=True)
    asked = layers.Cropping1D((steps - answers, 0), name="answer_steps")(states)
    answered = layers.Dense(classes, activation="softmax", name="answers")(asked)
    return keras.Model(sequence, answered, name=name)
