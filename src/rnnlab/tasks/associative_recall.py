"""Multi-query associative recall (Arora et al. 2023, Zoology, Fig. 2): given key-value
pairs, answer the value of each key asked again at the end.

A recurrent cell must hold every pair it has seen in its fixed-size state, so accuracy
falls as the pairs outnumber what the width can hold, and a wider state recovers it: the
gap Zoology found between attention and gated recurrences, measured here across cells and
widths.

The input is `pairs` key-value pairs (keys from the first half of the vocabulary, distinct
within an example; values from the second half), noise up to `length` steps, then `queries`
of the keys again; the model answers each query's value at its step. Chance is one over
the values: the baseline logged beside the test accuracy.
"""

from __future__ import annotations

import keras
import numpy as np

from rnnlab.recurrence.stack import RecurrentStack
from rnnlab.tasks.base import SyntheticTask, TaskData, answers_at_the_end

NOISE = 0  # keys are 1..vocabulary_size/2, values the rest


def associative_recall_problem(
    examples: int,
    length: int,
    pairs: int,
    queries: int,
    vocabulary_size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(one-hot inputs (examples, length, vocabulary_size + 1) float32, targets
    (examples, queries) int32: each query's value, counted from 0)."""
    keys_available = vocabulary_size // 2
    if not 1 <= pairs <= keys_available:
        raise ValueError(
            f"task.pairs must be between 1 and task.vocabulary_size / 2 ({keys_available}), "
            f"got {pairs}"
        )
    if not 1 <= queries <= pairs:
        raise ValueError(f"task.queries must be between 1 and task.pairs ({pairs}), got {queries}")
    if length < 2 * pairs + queries:
        raise ValueError(
            f"task.length must hold the pairs and queries ({2 * pairs + queries}), got {length}"
        )
    values_available = vocabulary_size - keys_available
    keys = rng.random((examples, keys_available)).argsort(axis=1)[:, :pairs] + 1
    values = rng.integers(0, values_available, size=(examples, pairs))
    asked = rng.random((examples, pairs)).argsort(axis=1)[:, :queries]  # which pairs, in what order
    sequence = np.full((examples, length), NOISE, dtype=np.int32)
    sequence[:, 0 : 2 * pairs : 2] = keys
    sequence[:, 1 : 2 * pairs : 2] = values + keys_available + 1
    sequence[:, length - queries :] = np.take_along_axis(keys, asked, axis=1)
    targets = np.take_along_axis(values, asked, axis=1).astype(np.int32)
    return np.eye(vocabulary_size + 1, dtype=np.float32)[sequence], targets


class AssociativeRecallTask(SyntheticTask):
    """Per-query classification of the value: the recurrent sequence's last steps."""

    loss = "sparse_categorical_crossentropy"
    metrics = ("accuracy",)

    def generate(self, examples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        return associative_recall_problem(
            examples, cfg.length, cfg.pairs, cfg.queries, cfg.vocabulary_size, rng
        )

    def build_model(self, recurrent: RecurrentStack) -> keras.Model:
        cfg = self.cfg
        values = cfg.vocabulary_size - cfg.vocabulary_size // 2
        return answers_at_the_end(
            recurrent,
            cfg.length,
            cfg.vocabulary_size + 1,
            cfg.queries,
            values,
            "associative_recall",
        )

    def evaluate_extra(
        self, model: keras.Model, data: TaskData
    ) -> tuple[dict[str, float], dict[str, str]]:
        return {
            "baseline_accuracy": 1 / (self.cfg.vocabulary_size - self.cfg.vocabulary_size // 2)
        }, {}
