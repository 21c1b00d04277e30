"""Chrono initialisation: the biases it draws, and the memory they give a cell at step 0."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hydra.utils import instantiate

from rnnlab.config import compose_config
from rnnlab.recurrence.initializers import ChronoBias


def built(cell: keras.layers.Layer, features: int = 3) -> keras.layers.Layer:
    keras.layers.RNN(cell).build((None, 7, features))
    return cell


def test_lstm_forget_biases_are_log_uniform_spans_and_input_biases_their_negatives():
    keras.utils.set_random_seed(0)
    cell = built(instantiate(compose_config(["cell=lstm_chrono", "cell.units=512"]).cell))
    bias = cell.bias.numpy().reshape(4, 512)  # Keras's gate order: input, forget, cell, output
    spans = np.exp(bias[1])
    assert spans.min() >= 1.0 and spans.max() <= 99.0  # u ~ U[1, T_max - 1], T_max = 100
    assert np.mean(spans) == pytest.approx(50.0, abs=4.0)  # a uniform's mean, within 4 sigma/√n
    np.testing.assert_allclose(bias[0], -bias[1])
    assert not bias[2:].any()


def test_gru_update_biases_are_chrono_and_its_recurrent_bias_stays_zero():
    keras.utils.set_random_seed(0)
    cell = built(instantiate(compose_config(["cell=gru_chrono", "cell.units=256"]).cell))
    inputs, recurrent = cell.bias.numpy()  # reset_after: input bias, then recurrent bias
    update = inputs[:256]  # Keras's gate order: update, reset, candidate
    assert np.exp(update).min() >= 1.0 and np.exp(update).max() <= 99.0
    assert not inputs[256:].any() and not recurrent.any()


def impulse_memory(cell: keras.layers.Layer, steps: int) -> float:
    """How much of a one-step input is left in the cell's state `steps` steps later, as a
    share of what the first step wrote (mean over units of |c_T| / |c_1|)."""
    layer = keras.layers.RNN(cell, return_state=True)
    impulse = np.zeros((64, steps, 3), np.float32)
    impulse[:, 0] = np.random.default_rng(0).normal(size=(64, 3))
    first = layer(impulse[:, :1])[-1].numpy()
    last = layer(impulse)[-1].numpy()
    return float(np.mean(np.abs(last)) / np.mean(np.abs(first)))


def test_a_chrono_lstm_remembers_an_input_for_its_span_where_the_usual_one_forgets():
    keras.utils.set_random_seed(0)
    usual = instantiate(compose_config(["cell=lstm", "cell.units=64"]).cell)
    chrono = instantiate(compose_config(["cell=lstm_chrono", "cell.units=64"]).cell)
    # The usual forget bias of 1 keeps sigmoid(1) = 0.73 a step: 0.73^50 = 2e-7 of it left.
    assert impulse_memory(usual, 50) < 1e-3
    assert impulse_memory(chrono, 50) > 0.05


@pytest.mark.parametrize(
    ("settings", "message"), [({"gates": "rnn"}, "gates"), ({"max_steps": 2}, "at least 3")]
)
def test_bad_settings_name_the_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        ChronoBias(**{"max_steps": 100, **settings})


def test_a_model_with_chrono_cells_saves_and_loads_in_safe_mode(tmp_path):
    cell = instantiate(compose_config(["cell=lstm_chrono", "cell.units=4"]).cell)
    inputs = keras.Input((5, 3))
    model = keras.Model(inputs, keras.layers.RNN(cell)(inputs))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    sequences = np.ones((2, 5, 3), np.float32)
    np.testing.assert_allclose(
        loaded.predict(sequences, verbose=0), model.predict(sequences, verbose=0)
    )
    restored = loaded.layers[1].cell.bias_initializer
    assert (restored.max_steps, restored.gates) == (100, "lstm")
