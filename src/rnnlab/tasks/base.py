"""What every task hands to the trainer: batched splits and the facts a run records."""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf


@dataclass
class TaskData:
    train: tf.data.Dataset  # shuffled each epoch, batched, prefetched
    validation: tf.data.Dataset  # for early stopping and tuning
    test: tf.data.Dataset  # held out: evaluated once, at the end
    train_size: int
    data_hash: str  # identifies the prepared data the run trained on


def batch_pipeline(
    examples: tf.data.Dataset, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    """Cache the prepared examples in memory, shuffle if training, batch and prefetch."""
    examples = examples.cache()
    if shuffle_seed is not None:
        examples = examples.shuffle(16_384, seed=shuffle_seed, reshuffle_each_iteration=True)
    return examples.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def arrays_hash(*arrays) -> str:
    """SHA-256 of generated arrays: identifies synthetic data as content_hash does files."""
    import hashlib

    digest = hashlib.sha256()
    for array in arrays:
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def task_data_from_arrays(splits: dict, batch_size: int, seed: int) -> TaskData:
    """TaskData from {'train': (inputs, targets), 'validation': ..., 'test': ...} arrays."""
    for name, (inputs, _) in splits.items():
        if len(inputs) == 0:
            raise ValueError(f"the {name} split is empty: raise its size in the task config")
    pipelines = {
        name: tf.data.Dataset.from_tensor_slices(arrays) for name, arrays in splits.items()
    }
    return TaskData(
        train=batch_pipeline(pipelines["train"], batch_size, shuffle_seed=seed),
        validation=batch_pipeline(pipelines["validation"], batch_size),
        test=batch_pipeline(pipelines["test"], batch_size),
        train_size=len(splits["train"][0]),
        data_hash=arrays_hash(*(array for arrays in splits.values() for array in arrays)),
    )


class SyntheticTask:
    """A task whose data a `generate(examples, rng)` method makes from the run's seed.

    Each split has its own random stream, so the test set never overlaps training and a
    rerun with the same seed sees the same examples.
    """

    SPLITS = ("train", "validation", "test")

    def __init__(self, cfg, data_dir: str) -> None:
        self.cfg = cfg
        self.test_split: tuple | None = None

    def prepare(self) -> None:
        """Nothing to prepare: the data is generated from the seed."""

    def generate(self, examples: int, rng):
        raise NotImplementedError

    def load(self, batch_size: int, seed: int) -> TaskData:
        import numpy as np

        splits = {}
        for index, name in enumerate(self.SPLITS):
            examples = self.cfg[f"{name}_examples"]
            if self.cfg.max_examples is not None:
                examples = min(examples, self.cfg.max_examples)
            splits[name] = self.generate(examples, np.random.default_rng([seed, index]))
        self.test_split = splits["test"]
        return task_data_from_arrays(splits, batch_size, seed)
