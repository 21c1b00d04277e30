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
    """recurrence_ops() as a new process would see it; the real library again afterwards."""
    native.recurrence_ops.cache_clear()
    yield native.recurrence_ops
    native.recurrence_ops.cache_clear()


def test_without_a_compiler_one_warning_and_the_lstm_still_runs(
    fresh_ops, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(native, "library_path", lambda: tmp_path / "never_built.so")
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger="rnnlab"):
        assert fresh_ops() is None
    assert "native recurrence ops are unavailable" in caplog.text
    assert not list(tmp_path.iterdir())  # no half-written library left behind
    sequences = tf.random.normal((2, 3, 4), seed=0)
    assert ProbedRNN(layers.LSTMCell(5))(sequences).shape == (2, 5)


def test_the_switch_turns_them_off(fresh_ops, monkeypatch):
    monkeypatch.setenv(native.SWITCH, "0")
    assert fresh_ops() is None


def test_shapes_that_disagree_are_refused_with_a_reason(native_ops):
    ops = native_ops
    units, rows, steps = 3, 2, 4
    states, none = tf.zeros((rows, units)), tf.zeros([0])
    kernel = tf.zeros((units, 4 * units))

    def forward(projected, kernel=kernel, bias=none, keep=none):
        return ops.rnnlab_lstm_forward(projected, kernel, bias, states, states, keep)

    projected = tf.zeros((steps, rows, 4 * units))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"kernel must be \[H, gates × H\]"):
        forward(projected, kernel=tf.zeros((units, 3 * units)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="projected must be"):
        forward(tf.zeros((steps, rows, 3 * units)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="keep must be"):
        forward(projected, keep=tf.ones((steps, rows + 1, 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="bias must be"):
        forward(projected, bias=tf.ones(5))
    h, c, gates = forward(projected)
    # Zero pre-activations: sigmoid gates at 1/2, candidate 0, so the states stay at zero.
    np.testing.assert_array_equal(gates[..., :units], 0.5)
    np.testing.assert_array_equal(h, 0.0)
    assert c.shape == (steps, rows, units)
