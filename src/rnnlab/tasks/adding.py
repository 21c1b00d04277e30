"""The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015).

Each step carries a random value in [0, 1) and a marker; exactly two steps are marked, one
in each half of the sequence. The target is the sum of the two marked values, so the
answer depends on a step up to `length` steps back. Predicting 1 whatever the input gives
MSE 1/6 ≈ 0.167: a model that does not beat it has learned nothing.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from rnnlab.recurrence.stack import RecurrentStack
from rnnlab.tasks.base import SyntheticTask, TaskData


def adding_problem(
    examples: int, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs of shape (examples, length, 2), targets of shape (examples, 1)), float32."""
    if length < 2:
        raise ValueError(f"task.length must be at least 2 for two markers, got {length}")
    values = rng.random((examples, length), dtype=np.float32)
    markers = np.zeros((examples, length), dtype=np.float32)
    rows = np.arange(examples)
    first = rng.integers(0, length // 2, size=examples)
    second = rng.integers(length // 2, length, size=examples)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = (values[rows, first] + values[rows, second])[:, None]
    return np.stack([values, markers], axis=-1), targets


class AddingTask(SyntheticTask):
    """Regression of the sum of two marked values: recurrent stack, then a linear unit."""

    loss = "mse"
    metrics = ()

    def generate(self, examples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return adding_problem(examples, self.cfg.length, rng)

    def build_model(self, recurrent: RecurrentStack) -> keras.Model:
        steps = keras.Input(shape=(self.cfg.length, 2), name="values_and_markers")
        total = layers.Dense(1, name="sum")(recurrent(steps))
        return keras.Model(steps, total, name="adding")

    def evaluate_extra(
        self, model: keras.Model, data: TaskData
    ) -> tuple[dict[str, float], dict[str, str]]:
        """The trivial baseline on the same test examples: always predict 1."""
        if self.test_split is None:
            raise ValueError("the adding problem's test split is made by load: call it first")
        return {"baseline_loss": float(np.mean((self.test_split[1] - 1.0) ** 2))}, {}
