"""The maths of Keras's SimpleRNN, LSTM and GRU cells, step by step, with derivatives by hand;
and the sLSTM's, which only rnnlab's native ops compute.

Each `CellKind` holds one cell's forward step and its backward step written out, split so
that whatever does not depend on the incoming gradient is computed for all steps at once
(`prepare`, `finish`) and the backward loop is left one small matmul and a handful of ops
per step. Both routes of the fused recurrence (`graph_loop`, and `native_calls` through
the C++ ops, whose kernels in native/fused_cells.cc restate these formulas) read the same
kinds, and `fused_cell_kind` says which Keras cells they reproduce exactly: tanh and
sigmoid activations, the GRU with reset_after, no recurrent dropout while training. xLSTM's
sLSTM (`SLSTM`) has its step and derivative in C++ only (native/fused_cells.cc): where the
native ops do not run, it takes Keras's step loop, not the graph loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from rnnlab.recurrence.xlstm import SLSTMCell


@dataclass(frozen=True)
class CellKind:
    """One cell's step and its hand-written derivative, in four parts.

    - `step(projected_t, states, kernel, bias) -> (new_states, records)`: one forward step;
      records are kept for the backward pass.
    - `prepare(projected, previous, history, records) -> (factors, extra)`: for all steps at
      once, what the backward step multiplies the incoming gradient by.
    - `backward(factors_t, gradients, kernel_parts) -> (d_previous_states, records)`: one
      step. `kernel_parts` are the transposed recurrent kernel's per-gate blocks: a small
      matmul per gate costs less than gathering the gates' gradients into one tensor.
    - `finish(records, extra) -> (d_projected, d_inner)`: for all steps at once, the
      gradients of the input projection and of the recurrent pre-activation h @ kernel.
    """

    tanh_gates: tuple[bool, ...]  # per gate: tanh (True) or sigmoid (False)
    native: str  # the name of its ops in rnnlab.recurrence.native: rnnlab_<native>_forward
    step: Callable
    prepare: Callable
    backward: Callable
    finish: Callable
    states: int = 1

    @property
    def gates(self) -> int:
        return len(self.tanh_gates)


def _gate_matmuls(parts, kernel_parts):
    return tf.add_n([tf.matmul(part, kernel) for part, kernel in zip(parts, kernel_parts)])


def simple_rnn_step(projected, states, kernel, bias):
    return (tf.tanh(projected + tf.matmul(states[0], kernel)),), ()


def simple_rnn_prepare(projected, previous, history, records):
    (h,) = history
    return (1.0 - h * h,), None


def simple_rnn_backward(factors, gradients, kernel_parts):
    pre_activation = gradients[0] * factors[0]
    return (tf.matmul(pre_activation, kernel_parts[0]),), (pre_activation,)


def gates_gradient(records, extra):
    """The input projection and the recurrent term enter the pre-activation alike."""
    d_z = concat(records, axis=-1)
    return d_z, d_z


def gate_scale(tanh_gates: tuple[bool, ...], units: int, dtype):
    """1 for a tanh gate's columns, 1/2 for a sigmoid gate's: see `gate_activations`."""
    return tf.constant(np.repeat([1.0 if tanh else 0.5 for tanh in tanh_gates], units), dtype)


def gate_activations(z, tanh_gates: tuple[bool, ...]):
    """Each gate's block of z through sigmoid, or tanh where `tanh_gates` says so, in one op.

    sigmoid(x) = tanh(x/2)/2 + 1/2 exactly, and TensorFlow's CPU tanh is vectorised while its
    sigmoid measured about 3 times slower here: one tanh serves every gate. The kernels and
    biases come already scaled by `gate_scale` (halving is exact in floating point), so z here
    is x/2 in the sigmoid gates' columns, and derivatives with respect to it are twice theirs.
    """
    half = gate_scale(tanh_gates, z.shape[-1] // len(tanh_gates), z.dtype)
    return tf.tanh(z) * half + (1.0 - half)


def lstm_step(projected, states, kernel, bias):
    h, c = states
    activations = gate_activations(projected + tf.matmul(h, kernel), LSTM.tanh_gates)
    i, f, g, o = tf.split(activations, 4, axis=-1)
    c = f * c + i * g
    return (o * tf.tanh(c), c), (activations,)


def lstm_prepare(projected, previous, history, records):
    i, f, g, o = tf.split(records[0], 4, axis=-1)
    tanh_c = tf.tanh(history[1])
    # dz = [dc·g·i', dc·c_prev·f', dc·i·g', dh·tanh(c)·o'] with dc including dh·o·tanh'(c);
    # a sigmoid gate's derivative is 2·s·(1 - s) with respect to its halved pre-activation.
    into_c = o * (1.0 - tanh_c * tanh_c)
    from_c = (2.0 * g * i * (1.0 - i), 2.0 * previous[1] * f * (1.0 - f), i * (1.0 - g * g))
    return (into_c, *from_c, 2.0 * tanh_c * o * (1.0 - o), f), None


def lstm_backward(factors, gradients, kernel_parts):
    into_c, into_i, into_f, into_g, into_o, f = factors
    dh, dc = gradients
    dc = dc + dh * into_c
    parts = (dc * into_i, dc * into_f, dc * into_g, dh * into_o)
    return (_gate_matmuls(parts, kernel_parts), dc * f), parts


def _gru_gates(projected, inner):
    """Update and reset gates, the recurrent candidate term, and the candidate."""
    units = inner.shape[-1] // 3
    x_gates, x_h = tf.split(projected, [2 * units, units], axis=-1)
    r_gates, r_h = tf.split(inner, [2 * units, units], axis=-1)
    z, r = tf.split(gate_activations(x_gates + r_gates, (False, False)), 2, axis=-1)
    return z, r, r_h, tf.tanh(x_h + r * r_h)


def gru_step(projected, states, kernel, bias):
    """Keras's GRU with reset_after: the reset gate scales the recurrent candidate term."""
    (h,) = states
    inner = tf.matmul(h, kernel)
    if bias is not None:
        inner = inner + bias
    z, _, _, candidate = _gru_gates(projected, inner)
    return (z * h + (1.0 - z) * candidate,), (inner,)


def gru_prepare(projected, previous, history, records):
    z, r, r_h, candidate = _gru_gates(projected, records[0])
    # Sigmoid gates' derivatives are 2·s·(1 - s) with respect to their halved pre-activations.
    into_z = 2.0 * (previous[0] - candidate) * z * (1.0 - z)
    into_candidate = (1.0 - z) * (1.0 - candidate * candidate)
    into_r = 2.0 * into_candidate * r_h * r * (1.0 - r)
    return (into_z, into_r, into_candidate * r, z), into_candidate


def gru_backward(factors, gradients, kernel_parts):
    into_z, into_r, into_recurrent_candidate, z = factors
    (dh,) = gradients
    parts = (dh * into_z, dh * into_r, dh * into_recurrent_candidate)
    return (dh * z + _gate_matmuls(parts, kernel_parts),), (dh, *parts)


def gru_finish(records, into_candidate):
    dh, d_z, d_r, d_recurrent_candidate = records
    d_projected = tf.concat([d_z, d_r, dh * into_candidate], axis=-1)
    return d_projected, tf.concat([d_z, d_r, d_recurrent_candidate], axis=-1)


SIMPLE_RNN = CellKind(
    (True,), "simple_rnn", simple_rnn_step, simple_rnn_prepare, simple_rnn_backward, gates_gradient
)
LSTM = CellKind(  # gates i, f, c, o: the cell candidate c is a tanh
    (False, False, True, False),
    "lstm",
    *(lstm_step, lstm_prepare, lstm_backward, gates_gradient),
    states=2,
)
GRU = CellKind(  # gates z, r, h
    (False, False, True), "gru", gru_step, gru_prepare, gru_backward, gru_finish
)
FUSED_KINDS = {layers.SimpleRNNCell: SIMPLE_RNN, layers.LSTMCell: LSTM, layers.GRUCell: GRU}


@dataclass(frozen=True)
class NativeCellKind:
    """A cell whose whole sequence only rnnlab's native ops compute: no graph-loop form, so
    without them (or for a dtype they lack) the cell takes Keras's step loop."""

    native: str  # the name of its ops: rnnlab_<native>_forward and _backward
    states: int


# xLSTM's sLSTM: states h, c, n, m; its recurrent kernel block-diagonal by heads.
SLSTM = NativeCellKind("slstm", states=4)


def fused_cell_kind(cell, training: bool) -> CellKind | NativeCellKind | None:
    """The fused recurrence for this cell, or None when only Keras's loop computes it."""
    if type(cell) is SLSTMCell and keras.backend.backend() == "tensorflow":
        return SLSTM  # it drops inputs only, as the fused route does
    kind = FUSED_KINDS.get(type(cell))
    if kind is None or keras.backend.backend() != "tensorflow":
        return None
    if training and cell.recurrent_dropout:
        return None
    recurrent_activation = getattr(cell, "recurrent_activation", keras.activations.sigmoid)
    if (cell.activation, recurrent_activation) != (
        keras.activations.tanh,
        keras.activations.sigmoid,
    ):
        return None
    if isinstance(cell, layers.GRUCell) and not cell.reset_after:
        return None
    return kind


def concat(parts, axis: int):
    """The parts joined along `axis`; a single part as it is, with no op in the graph."""
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=axis)
