"""The fused recurrence computes exactly what Keras's own loop computes, and knows its limits."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers
from recurrence_checks import count_native_calls, outputs_and_gradients

from rnnlab.recurrence import fused
from rnnlab.recurrence.cell_kinds import fused_cell_kind
from rnnlab.recurrence.layer import ProbedRNN

CELLS = [layers.SimpleRNNCell, layers.LSTMCell, layers.GRUCell]
# Each way a cell can be computed: rnnlab's native ops, or the recurrence in TensorFlow's graph.
ROUTES = [
    pytest.param(cell, route, id=f"{cell.__name__}-{route}")
    for cell in CELLS
    for route in ("native", "graph")
]
BATCH, STEPS, FEATURES, UNITS = 5, 7, 3, 4


@pytest.fixture
def take_route(monkeypatch, request):
    """Sends the cells through `route`; returns the list of calls the native path received."""

    def take(route: str) -> list:
        if route == "graph":
            monkeypatch.setattr(fused, "recurrence_ops", lambda: None)
            return []
        request.getfixturevalue("native_ops")  # skips, or fails in CI, without them
        return count_native_calls(monkeypatch)

    return take


def twin_layers(cell_class, **options):
    """The same weights twice: through the fused recurrence and through Keras's loop."""
    fused_layer = ProbedRNN(cell_class(UNITS), fused=True, **options)
    keras_loop = ProbedRNN(cell_class(UNITS), fused=False, **options)
    sequences = tf.random.normal((BATCH, STEPS, FEATURES), seed=1)
    fused_layer(sequences)
    keras_loop(sequences)
    for variable in fused_layer.trainable_variables:  # biases too: make them non-zero
        variable.assign(tf.random.normal(variable.shape, seed=2) * 0.5)
    keras_loop.set_weights(fused_layer.get_weights())
    return fused_layer, keras_loop


def ragged_mask():
    lengths = tf.constant([STEPS, 5, 1, 3, STEPS])
    return tf.sequence_mask(lengths, STEPS)


@pytest.mark.parametrize("cell_class, route", ROUTES)
@pytest.mark.parametrize(
    "options, masked",
    [
        ({"return_sequences": True, "return_state": True}, False),
        ({"return_sequences": True}, True),
        ({"go_backwards": True, "return_state": True}, True),
        ({"return_sequences": True, "zero_output_for_mask": True, "unroll": True}, True),
    ],
    ids=["sequences+states", "masked", "backwards+masked", "zero-output+unrolled"],
)
def test_fused_matches_keras_outputs_and_gradients(cell_class, route, options, masked, take_route):
    native_calls = take_route(route)
    fused_layer, keras_loop = twin_layers(cell_class, **options)
    sequences = tf.random.normal((BATCH, STEPS, FEATURES), seed=4)
    mask = ragged_mask() if masked else None
    ours = outputs_and_gradients(fused_layer, sequences, mask)
    theirs = outputs_and_gradients(keras_loop, sequences, mask)
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine, reference, rtol=1e-4, atol=1e-5)
    # Unrolling is a graph-loop option: the native ops never unroll.
    assert bool(native_calls) == (route == "native" and not options.get("unroll"))


@pytest.mark.parametrize("cell_class, route", ROUTES)
def test_rows_split_unevenly_across_shards_give_the_same_result(
    cell_class, route, monkeypatch, take_route
):
    take_route(route)
    fused_layer, keras_loop = twin_layers(cell_class, return_sequences=True)
    sequences = tf.random.normal((BATCH, STEPS, FEATURES), seed=5)
    monkeypatch.setattr(fused, "parallel_shards", lambda *_: 3)  # 5 rows: 1, 2 and 2
    for mine, reference in zip(
        outputs_and_gradients(fused_layer, sequences, None),
        outputs_and_gradients(keras_loop, sequences, None),
    ):
        np.testing.assert_allclose(mine, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("route", ["native", "graph"])
@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
def test_masked_steps_before_any_kept_one_output_zeros_whatever_the_initial_state(
    route, return_sequences, take_route
):
    """Reversed, a short row's padding comes first: Keras's loop outputs zeros there (its
    outputs start at zero), while its states hold the initial ones; a row masked throughout
    outputs zeros as its last output."""
    take_route(route)
    fused_layer, keras_loop = twin_layers(
        layers.LSTMCell, go_backwards=True, return_sequences=return_sequences
    )
    sequences = tf.random.normal((BATCH, STEPS, FEATURES), seed=8)
    initial = [tf.random.normal((BATCH, UNITS), seed=9 + index) for index in range(2)]
    mask = tf.sequence_mask([STEPS, 5, 1, 0, STEPS], STEPS)
    ours, theirs = (
        layer(sequences, mask=mask, initial_state=initial) for layer in (fused_layer, keras_loop)
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    if return_sequences:  # the row of one step, reversed: zeros until its step
        np.testing.assert_array_equal(ours[2, : STEPS - 1], 0.0)
    np.testing.assert_array_equal((ours[3, -1] if return_sequences else ours[3]), 0.0)


@pytest.mark.parametrize("cell_class, route", ROUTES)
def test_a_length_known_only_at_run_time_works(cell_class, route, take_route):
    """Series of any length: the time axis is unknown while the graph is traced."""
    take_route(route)
    fused_layer, keras_loop = twin_layers(cell_class, return_sequences=True)
    signature = [tf.TensorSpec((None, None, FEATURES)), tf.TensorSpec((None, None), tf.bool)]
    for length in (1, STEPS + 2):
        sequences = tf.random.normal((BATCH, length, FEATURES), seed=7)
        mask = tf.sequence_mask([length, 1, length, 2, 1], length)
        ours, theirs = (
            tf.function(lambda s, m, layer=layer: layer(s, mask=m), input_signature=signature)(
                sequences, mask
            )
            for layer in (fused_layer, keras_loop)
        )
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell_class", CELLS, ids=lambda c: c.__name__)
def test_input_dropout_uses_the_cells_own_mask(cell_class):
    """Keras draws one dropout mask per sequence; the fused path must apply that very mask."""
    layer, _ = twin_layers(cell_class)
    layer.cell.dropout = 0.5
    sequences = tf.random.normal((BATCH, STEPS, FEATURES), seed=6)
    states = layer.get_initial_state(BATCH)
    layer._maybe_config_dropout_masks(layer.cell, sequences[:, 0, :], states)
    kind = fused_cell_kind(layer.cell, training=True)
    ours = fused.fused_rnn(layer, kind, sequences, states, None, training=True)
    theirs = layers.RNN.inner_loop(layer, sequences, states, None, training=True)
    layer._maybe_reset_dropout_masks(layer.cell)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-4, atol=1e-5)
    dropped = layers.RNN.inner_loop(layer, sequences, states, None, training=False)
    assert not np.allclose(ours[0], dropped[0])  # the mask did something


class ScaledTanhCell(layers.SimpleRNNCell):
    """A user's own cell: a subclass whose maths the fused recurrence does not know."""

    def call(self, sequence, states, training=False):
        output, new_states = super().call(sequence, states, training=training)
        return output * 0.5, [new_states[0] * 0.5]


def test_cells_the_fused_recurrence_does_not_know_take_keras_loop():
    assert fused_cell_kind(layers.LSTMCell(2), training=True) is not None
    assert fused_cell_kind(ScaledTanhCell(2), training=True) is None
    assert fused_cell_kind(layers.GRUCell(2, reset_after=False), training=False) is None
    assert fused_cell_kind(layers.LSTMCell(2, activation="relu"), training=False) is None
    with_recurrent_dropout = layers.GRUCell(2, recurrent_dropout=0.2)
    assert fused_cell_kind(with_recurrent_dropout, training=True) is None
    assert fused_cell_kind(with_recurrent_dropout, training=False) is not None


def test_a_users_cell_still_trains_through_probed_rnn():
    """Keras's loop runs the cell's own maths, h_t = tanh(x_t W + h_{t-1} U + b) / 2, as
    written out here by hand, and training lowers the loss."""
    layer = ProbedRNN(ScaledTanhCell(UNITS))
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), layer, layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    sequences = np.random.default_rng(0).normal(size=(16, STEPS, FEATURES)).astype("float32")
    history = model.fit(sequences, sequences[:, -1, :1], epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert layer.recurrence_routes[True] == ("keras", 1)  # not the fused recurrence
    cell = layer.cell
    kernel, recurrent_kernel, bias = (
        np.asarray(w) for w in (cell.kernel, cell.recurrent_kernel, cell.bias)
    )
    h = np.zeros((len(sequences), UNITS), np.float32)
    for t in range(STEPS):
        h = np.tanh(sequences[:, t] @ kernel + h @ recurrent_kernel + bias) * 0.5
    np.testing.assert_allclose(layer(sequences), h, rtol=1e-5, atol=1e-6)
