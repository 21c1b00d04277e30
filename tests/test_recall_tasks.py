"""Selective copying and associative recall: generated data checked by hand, and a run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnlab.tasks.associative_recall import associative_recall_problem
from rnnlab.tasks.selective_copying import selective_copying_problem
from rnnlab.training.run import run


def test_selective_copying_asks_for_the_scattered_tokens_in_order():
    inputs, targets = selective_copying_problem(200, 30, 5, 8, np.random.default_rng(0))
    symbols = inputs.argmax(axis=-1)
    assert inputs.shape == (200, 35, 10) and targets.shape == (200, 5)
    data = symbols[:, :30]
    assert ((data > 0).sum(axis=1) == 5).all()  # five data tokens among noise
    assert (symbols[:, 30:] == 9).all()  # then the go symbol, once per answer
    for row in range(200):
        assert (data[row][data[row] > 0] - 1 == targets[row]).all()  # in order, from 0
    # Where the tokens sit varies: no position holds a token in every example.
    assert (data > 0).mean(axis=0).max() < 0.5


def test_associative_recall_queries_keys_it_showed_and_targets_their_values():
    inputs, targets = associative_recall_problem(200, 24, 6, 4, 32, np.random.default_rng(0))
    symbols = inputs.argmax(axis=-1)
    assert inputs.shape == (200, 24, 33) and targets.shape == (200, 4)
    for row in range(200):
        keys, values = symbols[row, 0:12:2], symbols[row, 1:12:2]
        assert len(set(keys)) == 6 and (keys <= 16).all() and (values > 16).all()
        assert (symbols[row, 12:20] == 0).all()  # noise between the pairs and the queries
        pair = dict(zip(keys.tolist(), (values - 17).tolist(), strict=True))
        assert [pair[key] for key in symbols[row, 20:]] == targets[row].tolist()


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        (lambda rng: selective_copying_problem(4, 3, 5, 8, rng), "task.length must be at least"),
        (lambda rng: selective_copying_problem(4, 9, 0, 8, rng), "task.tokens must be"),
        (lambda rng: associative_recall_problem(4, 24, 20, 4, 32, rng), "task.pairs must be"),
        (lambda rng: associative_recall_problem(4, 24, 6, 7, 32, rng), "task.queries must be"),
        (lambda rng: associative_recall_problem(4, 10, 6, 4, 32, rng), "task.length must hold"),
    ],
)
def test_impossible_settings_are_refused_naming_the_key(problem, message):
    with pytest.raises(ValueError, match=message):
        problem(np.random.default_rng(0))


@pytest.mark.parametrize(
    ("task", "size", "chance"),
    [
        ("selective_copying", ["task.length=20", "task.tokens=4", "task.vocabulary_size=8"], 1 / 8),
        ("associative_recall", ["task.length=16", "task.pairs=4", "task.queries=4"], 1 / 32),
    ],
)
def test_a_cell_trains_on_the_recall_tasks_and_logs_chance_beside(compose, task, size, chance):
    metrics = run(
        compose(f"task={task}", *size, "cell=gru", "cell.units=8", "trainer.epochs=1")
    ).metrics
    assert 0 <= metrics["test_accuracy"] <= 1 and math.isfinite(metrics["test_loss"])
    assert metrics["test_baseline_accuracy"] == pytest.approx(chance)
