"""The copy-memory problem (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

The input is 10 symbols from an alphabet of 8, then `delay` blanks with a delimiter on
the last one, then 10 more blanks. The target is blanks until the delimiter has passed and
then the 10 symbols again, so the model must hold them for `delay` steps. A memoryless model
that outputs blanks and then guesses uniformly scores cross-entropy 10·log(8)/(delay + 20):
the baseline logged beside the test loss.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers

from rnnlab.recurrence.stack import RecurrentStack
from rnnlab.tasks.base import SyntheticTask, TaskData

BLANK, DELIMITER, ALPHABET, REMEMBERED = 0, 9, 8, 10  # symbols 1..8 are the alphabet


def copy_memory_problem(
    examples: int, delay: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(one-hot inputs (examples, delay + 20, 10) float32, targets (examples, delay + 20) int32)."""
    if delay < 1:
        raise ValueError(f"task.delay must be at least 1, got {delay}")
    length = delay + 2 * REMEMBERED
    symbols = rng.integers(1, ALPHABET + 1, size=(examples, REMEMBERED))
    tokens = np.full((examples, length), BLANK, dtype=np.int32)
    tokens[:, :REMEMBERED] = symbols
    tokens[:, REMEMBERED + delay - 1] = DELIMITER
    targets = np.full((examples, length), BLANK, dtype=np.int32)
    targets[:, -REMEMBERED:] = symbols
    return np.eye(DELIMITER + 1, dtype=np.float32)[tokens], targets


def memoryless_baseline(delay: int) -> float:
    return REMEMBERED * math.log(ALPHABET) / (delay + 2 * REMEMBERED)


class CopyMemoryTask(SyntheticTask):
    """Per-step classification of the symbol to emit: recurrent sequence, then softmax."""

    loss = "sparse_categorical_crossentropy"
    metrics = ("accuracy",)

    def generate(self, examples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return copy_memory_problem(examples, self.cfg.delay, rng)

    def build_model(self, recurrent: RecurrentStack) -> keras.Model:
        symbols = keras.Input(
            shape=(self.cfg.delay + 2 * REMEMBERED, DELIMITER + 1), name="symbols"
        )
        emitted = layers.Dense(DELIMITER + 1, activation="softmax", name="emitted")(
            recurrent(symbols, return_sequences=True)
        )
        return keras.Model(symbols, emitted, name="copy_memory")

    def evaluate_extra(
        self, model: keras.Model, data: TaskData
    ) -> tuple[dict[str, float], dict[str, str]]:
        return {"baseline_loss": memoryless_baseline(self.cfg.delay)}, {}
