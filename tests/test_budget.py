"""Parameter budgets: counts of built models, and the width that comes closest to a budget."""

from __future__ import annotations

import keras
import pytest
from mlflow import MlflowClient

from rnnlab.config import ConfigError
from rnnlab.tasks import load_task
from rnnlab.training.budget import parameter_counts, units_for_budget
from rnnlab.training.run import budgeted_cell, build_model, run, with_units


def closest_by_brute_force(budget: int, count_for, most: int = 2000) -> int:
    distances = {units: abs(count_for(units) - budget) for units in range(1, most)}
    return min(distances, key=lambda units: (distances[units], units))


@pytest.mark.parametrize("budget", [97, 361, 1000, 1001, 12_345, 250_000])
def test_the_width_is_the_closest_count_like_a_brute_force_search(budget):
    def lstm_like(units: int) -> int:  # an LSTM's recurrent layer on 3 inputs, and a head
        return 4 * (units * units + 3 * units + units) + units + 1

    assert units_for_budget(budget, lstm_like) == closest_by_brute_force(budget, lstm_like)


def test_a_tie_goes_to_the_narrower_width():
    assert units_for_budget(15, lambda units: 10 * units) == 1  # 10 and 20 are both 5 away
    assert units_for_budget(25, lambda units: 10 * units) == 2


def test_a_budget_out_of_reach_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"model.param_budget=10 is below .* 97 parameters"):
        units_for_budget(10, lambda units: 96 + units)
    with pytest.raises(ConfigError, match=r"model.param_budget=1000000000000 needs more than"):
        units_for_budget(10**12, lambda units: units)


def test_the_counts_are_the_models_trainable_weights(compose, tmp_path):
    cfg = compose("task=adding", "cell=lstm", "cell.units=8", "model.layers=2")
    task, _ = load_task(cfg.task, cfg.data_dir, 32, 0)
    counts = parameter_counts(build_model(cfg.cell, cfg.model, task))
    # Two LSTM layers (on 2 inputs, then on 8) and a dense head, counted by hand.
    first, second = 4 * (8 * 8 + 2 * 8 + 8), 4 * (8 * 8 + 8 * 8 + 8)
    assert counts == {"n_params": first + second + 8 + 1, "n_params_recurrent": first + second}


@pytest.mark.parametrize(
    "cell", ["simple_rnn", "lstm", "gru", "irnn", "indrnn", "mingru", "minlstm", "lru"]
)
def test_every_cell_gets_the_width_whose_model_is_closest_to_the_budget(compose, cell):
    cfg = compose("task=adding", f"cell={cell}", "model.param_budget=3000")
    task, _ = load_task(cfg.task, cfg.data_dir, 32, 0)
    chosen = budgeted_cell(cfg, task)
    assert chosen.units != cfg.cell.units and cfg.cell.units == 64, "the config is left alone"

    def count(units: int) -> int:
        keras.backend.clear_session()
        return parameter_counts(build_model(with_units(cfg.cell, units), cfg.model, task))[
            "n_params"
        ]

    distance = abs(count(chosen.units) - 3000)
    assert distance <= abs(count(chosen.units - 1) - 3000)
    assert distance < abs(count(chosen.units + 1) - 3000)
    assert budgeted_cell(cfg, task).units == chosen.units, "the same budget, the same width"


def test_a_users_own_cell_is_sized_by_counting_it(compose):
    cfg = compose("task=adding", "cell=gru", "+cell.reset_after=false", "model.param_budget=3000")
    task, _ = load_task(cfg.task, cfg.data_dir, 32, 0)
    # GRU without reset_after has one bias per gate, not two: 3(u² + 2u + u) + u + 1.
    expected = closest_by_brute_force(3000, lambda u: 3 * (u * u + 2 * u + u) + u + 1, 100)
    assert budgeted_cell(cfg, task).units == expected


@pytest.mark.slow
def test_a_budgeted_run_logs_its_width_and_counts(compose, tracking_uri):
    result = run(
        compose("task=adding", "task.length=10", "cell=simple_rnn", "model.param_budget=500")
    )
    metrics = result.metrics
    logged = MlflowClient(tracking_uri).get_run(result.run_id).data
    assert logged.params["cell.units"] == "64" and logged.params["model.param_budget"] == "500"
    # SimpleRNN on 2 inputs with a dense head: (2u + u² + u) + (u + 1): 481 at 20, 526 at 21.
    assert logged.metrics["units"] == 20 == metrics["units"]
    assert logged.metrics["n_params"] == 481 and logged.metrics["n_params_recurrent"] == 460
