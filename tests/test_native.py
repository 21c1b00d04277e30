"""rnnlab's native ops: they build, refuse bad shapes clearly, fail soft without a compiler."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from rnnlab import native
from rnnlab.probe import ProbedRNN


@pytest.fixture
def fresh_ops():
    """lstm_ops() as a new process would see it; the real library again afterwards."""
    native.lstm_ops.cache_clear()
    yield native.lstm_ops
    native.lstm_ops.cache_clear()


def test_without_a_compiler_one_warning_and_the_lstm_still_runs(
    fresh_ops, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(native, "library_path", lambda: tmp_path / "never_built.so")
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger="rnnlab"):
        assert fresh_ops() is None
    assert "native LSTM ops are unavailable" in caplog.text
    assert not list(tmp_path.iterdir())  # no half-written library left behind
    sequences = tf.random.normal((2, 3, 4), seed=0)
    assert ProbedRNN(layers.LSTMCell(5))(sequences).shape == (2, 5)


def test_the_switch_turns_them_off(fresh_ops, monkeypatch):
    monkeypatch.setenv(native.SWITCH, "0")
    assert fresh_ops() is None


def test_shapes_that_disagree_are_refused_with_a_reason():
    ops = native.lstm_ops()
    if ops is None:
        pytest.skip("rnnlab's native ops did not build here (see the warning)")
    units, rows, steps = 3, 2, 4
    states = tf.zeros((rows, units))
    no_mask = tf.zeros([0])
    kernel = tf.zeros((units, 4 * units))
    with pytest.raises(tf.errors.InvalidArgumentError, match="4 × the kernel's rows"):
        ops.rnnlab_lstm_forward(tf.zeros((steps, rows, 3 * units)), kernel, states, states, no_mask)
    with pytest.raises(tf.errors.InvalidArgumentError, match="keep must be"):
        ops.rnnlab_lstm_forward(
            tf.zeros((steps, rows, 4 * units)),
            kernel,
            states,
            states,
            tf.ones((steps, rows + 1, 1)),
        )
    h, c, gates = ops.rnnlab_lstm_forward(
        tf.zeros((steps, rows, 4 * units)), kernel, states, states, no_mask
    )
    # Zero pre-activations: sigmoid gates at 1/2, candidate 0, so the states stay at zero.
    np.testing.assert_array_equal(gates[..., :units], 0.5)
    np.testing.assert_array_equal(h, 0.0)
    assert c.shape == (steps, rows, units)
