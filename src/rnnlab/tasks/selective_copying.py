"""Selective copying (Gu & Dao 2023, Mamba, Table 1): copy the data tokens, in order, out
of a sequence where they sit at random positions among noise.

Copy memory asks a cell to hold what came at fixed times; here where the tokens are varies
from one example to the next, so a cell must decide from each input whether to keep it: a
recurrence whose gates depend on the input (GRU, LSTM, minGRU, minLSTM, S6) can, a
time-invariant one (S4, the LRU) cannot (Mamba: S4 18.3% against S6 97.0%).

The input is `length` steps, `tokens` of them data symbols 1..`vocabulary_size` at random
positions and the rest noise (0), then `tokens` steps of a go symbol during which the model
answers each data symbol in order. Chance (a uniform guess) is 1 / vocabulary_size: the
baseline logged beside the test accuracy.
"""

from __future__ import annotations

import keras
import numpy as np

from rnnlab.recurrence.stack import RecurrentStack
from rnnlab.tasks.base import SyntheticTask, TaskData, answers_at_the_end

NOISE = 0  # symbols 1..vocabulary_size are data; the go symbol follows them


def selective_copying_problem(
    examples: int, length: int, tokens: int, vocabulary_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(one-hot inputs (examples, length + tokens, vocabulary_size + 2) float32,
    targets (examples, tokens) int32: each example's data symbols in order, from 0)."""
    if tokens < 1 or vocabulary_size < 2:
        raise ValueError(
            f"task.tokens must be at least 1 and task.vocabulary_size at least 2, got "
            f"{tokens} and {vocabulary_size}"
        )
    if length < tokens:
        raise ValueError(f"task.length must be at least task.tokens ({tokens}), got {length}")
    go = vocabulary_size + 1
    symbols = rng.integers(1, vocabulary_size + 1, size=(examples, tokens))
    # Each example's positions: `tokens` of the `length` steps, in order, drawn without repeats.
    positions = np.sort(rng.random((examples, length)).argsort(axis=1)[:, :tokens], axis=1)
    sequence = np.full((examples, length + tokens), NOISE, dtype=np.int32)
    np.put_along_axis(sequence, positions, symbols, axis=1)
    sequence[:, length:] = go
    return np.eye(go + 1, dtype=np.float32)[sequence], (symbols - 1).astype(np.int32)


class SelectiveCopyingTask(SyntheticTask):
    """Per-answer classification of the data symbol: the recurrent sequence's last steps."""

    loss = "sparse_categorical_crossentropy"
    metrics = ("accuracy",)

    def generate(self, examples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        return selective_copying_problem(examples, cfg.length, cfg.tokens, cfg.vocabulary_size, rng)

    def build_model(self, recurrent: RecurrentStack) -> keras.Model:
        cfg = self.cfg
        return answers_at_the_end(
            recurrent,
            cfg.length + cfg.tokens,
            cfg.vocabulary_size + 2,
            cfg.tokens,
            cfg.vocabulary_size,
            "selective_copying",
        )

    def evaluate_extra(
        self, model: keras.Model, data: TaskData
    ) -> tuple[dict[str, float], dict[str, str]]:
        return {"baseline_accuracy": 1 / self.cfg.vocabulary_size}, {}
