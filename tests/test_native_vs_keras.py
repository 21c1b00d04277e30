"""rnnlab's native recurrence ops compute what Keras's own step loop computes.

test_fused_rnn.py checks the fused recurrence on one small shape. Here the native route alone
is held against Keras's loop (fused=False) where its C++ kernels could go wrong: one row,
one step, one unit, wide layers over long series, shards with no rows, stacked and
bidirectional models, reversed masked series, cells without biases and stateful layers.
Every case compares all outputs and the gradients with respect to the inputs and every
weight, and asserts that the native ops really ran, so Keras is never compared with itself.
xLSTM's sLSTM, which has its own native ops, runs every case but the one without biases (it
always has them), in two heads where its width is even, so R's blocks are exercised.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers
from recurrence_checks import count_native_calls, outputs_and_gradients

from rnnlab.recurrence import fused
from rnnlab.recurrence.layer import ProbedRNN
from rnnlab.recurrence.xlstm import SLSTMCell


def slstm(units, **options):
    """xLSTM's sLSTM, in two heads where the width is even, else in one."""
    return SLSTMCell(units, heads=2 if units % 2 == 0 else 1, **options)


KERAS_CELLS = [layers.SimpleRNNCell, layers.LSTMCell, layers.GRUCell]
CELLS = [*KERAS_CELLS, slstm]
FEATURES = 4


@pytest.fixture
def native_calls(monkeypatch, native_ops):
    """The calls the native path receives; skips (or fails in CI) without the ops."""
    return count_native_calls(monkeypatch)


@pytest.fixture
def shards(monkeypatch):
    """shards(n): split every batch into n row shards, whatever this machine's core count."""
    return lambda count: monkeypatch.setattr(fused, "parallel_shards", lambda *_: count)


def randomize(fused, keras_loop, seed=0):
    """Random non-zero weights and biases in `fused`, copied into `keras_loop`.

    Matrices are scaled by 1/sqrt(rows) (the sLSTM's R per head), so 100 steps neither
    saturate nor explode.
    """
    rng = np.random.default_rng(seed)
    for variable in fused.trainable_variables:
        scale = 0.5 if variable.name == "bias" else 1 / np.sqrt(variable.shape[-2])
        variable.assign(rng.normal(size=variable.shape).astype("float32") * scale)
    keras_loop.set_weights(fused.get_weights())


def twin_layers(cell_class, units, sequences, cell_options=None, **options):
    fused, keras_loop = (
        ProbedRNN(cell_class(units, **(cell_options or {})), fused=fused, **options)
        for fused in (True, False)
    )
    fused(sequences)
    keras_loop(sequences)
    randomize(fused, keras_loop)
    return fused, keras_loop


def assert_same(ours, theirs):
    """Equal within rtol 1e-4 and atol 1e-5, or a millionth of the largest entry if more.

    A weight's gradient sums batch × steps terms, up to hundreds at 100 steps: the fused path
    sums them in one matmul, Keras step by step, so float32 rounding can leave a small entry
    a few 1e-5 apart (measured up to 2e-7 of the largest). Keras's own float32 result is
    as far from a float64 run, so a fixed atol would only have to be looser.
    """
    assert len(ours) == len(theirs)
    for index, (mine, reference) in enumerate(zip(ours, theirs)):
        atol = max(1e-5, 1e-6 * float(np.max(np.abs(reference), initial=0.0)))
        np.testing.assert_allclose(mine, reference, rtol=1e-4, atol=atol, err_msg=f"#{index}")


def assert_native(calls, *probed):
    """The native ops ran, and every fused layer says it took them."""
    assert calls
    for layer in probed:
        assert layer.recurrence_routes[True][0] == "native", layer.name


def random_sequences(batch, steps, seed=1):
    return tf.random.normal((batch, steps, FEATURES), seed=seed)


def ragged_mask(batch, steps, seed=2):
    """Random lengths from 0 (a fully masked row) to `steps`, the first row full."""
    lengths = np.random.default_rng(seed).integers(0, steps + 1, size=batch)
    lengths[0] = steps
    return tf.sequence_mask(lengths, steps)


@pytest.mark.parametrize("cell_class", CELLS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "batch, steps, units, shard_count, options, masked",
    [
        # One row in four shards: three shards get no rows.
        (1, 1, 1, 4, {"return_sequences": True, "return_state": True}, False),
        # Three rows in four shards, reversed and masked.
        (3, 2, 3, 4, {"go_backwards": True, "return_sequences": True}, True),
        (65, 100, 33, 3, {"return_sequences": True, "return_state": True}, True),
        (3, 100, 130, 2, {"go_backwards": True, "return_sequences": True}, False),
        (1, 2, 130, 1, {"return_state": True}, False),
    ],
    ids=[
        "b1-t1-u1-empty-shards",
        "b3-t2-u3-empty-shard-backwards-masked",
        "b65-t100-u33-masked",
        "b3-t100-u130-backwards",
        "b1-t2-u130",
    ],
)
def test_native_matches_keras(
    cell_class, batch, steps, units, shard_count, options, masked, native_calls, shards
):
    shards(shard_count)
    sequences = random_sequences(batch, steps)
    fused, keras_loop = twin_layers(cell_class, units, sequences, **options)
    mask = ragged_mask(batch, steps) if masked else None
    native_calls.clear()
    ours = outputs_and_gradients(fused, sequences, mask)
    assert_native(native_calls, fused)
    assert_same(ours, outputs_and_gradients(keras_loop, sequences, mask))


@pytest.mark.parametrize("cell_class", CELLS, ids=lambda c: c.__name__)
def test_stacked_layers_match_keras(cell_class, native_calls, shards):
    shards(2)
    sequences = random_sequences(3, 7)

    def stacked(fused):
        return keras.Sequential(
            [
                keras.Input((7, FEATURES)),
                ProbedRNN(cell_class(5), fused=fused, return_sequences=True),
                ProbedRNN(cell_class(3), fused=fused),
            ]
        )

    fused, keras_loop = stacked(True), stacked(False)
    randomize(fused, keras_loop)
    native_calls.clear()
    ours = outputs_and_gradients(fused, sequences)
    assert_native(native_calls, *fused.layers)
    assert_same(ours, outputs_and_gradients(keras_loop, sequences))


@pytest.mark.parametrize("cell_class", CELLS, ids=lambda c: c.__name__)
def test_bidirectional_layer_matches_keras(cell_class, native_calls, shards):
    shards(2)
    sequences = random_sequences(5, 6)
    fused, keras_loop = (
        layers.Bidirectional(ProbedRNN(cell_class(4), fused=fused, return_sequences=True))
        for fused in (True, False)
    )
    fused(sequences)
    keras_loop(sequences)
    randomize(fused, keras_loop)
    mask = ragged_mask(5, 6)
    native_calls.clear()
    ours = outputs_and_gradients(fused, sequences, mask)
    # The backward copy is made from the forward layer's config: it must be fused too.
    assert_native(native_calls, fused.forward_layer, fused.backward_layer)
    assert_same(ours, outputs_and_gradients(keras_loop, sequences, mask))


@pytest.mark.parametrize("cell_class", KERAS_CELLS, ids=lambda c: c.__name__)
def test_cells_without_biases_take_the_native_ops_and_match_keras(cell_class, native_calls, shards):
    """use_bias=False is not a reason to leave the fused path: the ops run with no bias."""
    shards(2)
    sequences = random_sequences(5, 9)
    fused, keras_loop = twin_layers(
        cell_class, 6, sequences, cell_options={"use_bias": False}, return_sequences=True
    )
    assert fused.cell.bias is None
    mask = ragged_mask(5, 9)
    native_calls.clear()
    ours = outputs_and_gradients(fused, sequences, mask)
    assert_native(native_calls, fused)
    assert_same(ours, outputs_and_gradients(keras_loop, sequences, mask))


@pytest.mark.parametrize("cell_class", CELLS, ids=lambda c: c.__name__)
def test_stateful_layers_take_the_native_ops_and_carry_keras_states(
    cell_class, native_calls, shards
):
    """stateful=True also takes the native ops: the carried state is their initial state."""
    shards(2)
    first, second = random_sequences(3, 8, seed=1), random_sequences(3, 8, seed=3)
    fused, keras_loop = twin_layers(
        cell_class, 6, first, stateful=True, return_sequences=True, return_state=True
    )
    fused.reset_state()
    keras_loop.reset_state()
    native_calls.clear()
    for sequences in (first, second):  # the second call starts from the first's final states
        ours = outputs_and_gradients(fused, sequences)
        assert_same(ours, outputs_and_gradients(keras_loop, sequences))
        assert_same(
            [np.asarray(s) for s in fused.states], [np.asarray(s) for s in keras_loop.states]
        )
    assert_native(native_calls, fused)
