"""What every task hands to the trainer: batched splits and the facts a run records."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds


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


def catalog_splits(source: str, splits: dict[str, str]) -> dict[str, tf.data.Dataset]:
    """`tfds:<name>` from the TFDS catalog as (input, target) pairs, e.g. `tfds:imdb_reviews`.

    `splits` maps our split names to TFDS split strings (`train[:90%]`). TFDS downloads the
    set on first use, so this path needs a network; tests run it under `mock_data`.
    """
    name = source.removeprefix("tfds:")
    loaded = tfds.load(name, split=list(splits.values()), as_supervised=True)
    return dict(zip(splits, loaded, strict=True))
