"""The adding and copy-memory problems: generated data, baselines, and every cell trains."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnlab.tasks.adding import adding_problem
from rnnlab.tasks.copy_memory import BLANK, DELIMITER, copy_memory_problem, memoryless_baseline
from rnnlab.training.run import run

CELLS = ["simple_rnn", "irnn", "lstm", "gru"]


def test_adding_marks_one_step_in_each_half_and_sums_them():
    inputs, targets = adding_problem(500, 20, np.random.default_rng(0))
    assert inputs.shape == (500, 20, 2) and targets.shape == (500, 1)
    markers = inputs[..., 1]
    assert (markers.sum(axis=1) == 2).all()
    assert (markers[:, :10].sum(axis=1) == 1).all() and (markers[:, 10:].sum(axis=1) == 1).all()
    assert np.allclose((inputs[..., 0] * markers).sum(axis=1), targets[:, 0])
    # Always predicting 1 scores the variance of a sum of two uniforms, 1/6.
    assert np.mean((targets - 1) ** 2) == pytest.approx(1 / 6, abs=0.02)


def test_copy_memory_targets_repeat_the_symbols_after_the_delay():
    inputs, targets = copy_memory_problem(50, 7, np.random.default_rng(0))
    tokens = inputs.argmax(axis=-1)
    assert tokens.shape == targets.shape == (50, 27)
    assert (tokens[:, 16] == DELIMITER).all()
    assert ((tokens[:, :10] >= 1) & (tokens[:, :10] <= 8)).all()
    assert (targets[:, :17] == BLANK).all()
    assert (targets[:, -10:] == tokens[:, :10]).all()
    assert memoryless_baseline(100) == pytest.approx(10 * math.log(8) / 120)


@pytest.mark.parametrize(("problem", "size"), [(adding_problem, 1), (copy_memory_problem, 0)])
def test_too_short_sequences_are_refused(problem, size):
    with pytest.raises(ValueError, match="must be at least"):
        problem(10, size, np.random.default_rng(0))


def test_an_empty_split_is_refused(compose):
    with pytest.raises(ValueError, match="task.validation_examples must be at least 1, got 0"):
        run(compose("task=adding", "task.length=10", "task.validation_examples=0"))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["adding", "copy_memory"])
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_trains_on_the_synthetic_tasks(compose, task, cell):
    size = "task.length=12" if task == "adding" else "task.delay=5"
    metrics = run(
        compose(f"task={task}", size, f"cell={cell}", "cell.units=8", "trainer.epochs=1")
    ).metrics
    assert math.isfinite(metrics["test_loss"])
    assert metrics["test_baseline_loss"] > 0
