"""A faster recurrence for Keras's own SimpleRNN, LSTM and GRU cells, with the same maths.

Keras runs a cell step by step and lets TensorFlow differentiate the loop. On a CPU each
small op in a step costs a few microseconds of dispatch whatever its size, and the one
recurrent matmul of a step cannot use more than one core. So here:
- the input projection of every step is one large matmul before the loop;
- the backward pass is written by hand: whatever does not depend on the incoming gradient
  (gate derivatives and their products) is computed for all steps at once before the
  backward loop, which then costs one small matmul and a handful of ops per step, and the
  kernels' gradients are single large matmuls after it;
- the rows of a batch are independent, so one recurrence per core runs side by side;
- the time loop runs in rnnlab's native C++ ops (rnnlab.native) where they are built, one
  op for all forward steps and one for all backward steps; else in a tf.while_loop below.
Gates, initialisers, dropout on the inputs, masks and the results (within float
tolerance) are Keras's; anything else (recurrent dropout, other activations, a user's own
cell) takes the standard Keras path. benchmarks/RESULTS.md has the measurements.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from tensorflow.python.framework import ops as tf_ops

from rnnlab.recurrence.native import recurrence_ops
from rnnlab.threads import parallel_shards


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
    native: str  # the name of its ops in rnnlab.native: rnnlab_<native>_forward
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
    d_z = _concat(records, axis=-1)
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


def fused_cell_kind(cell, training: bool) -> CellKind | None:
    """The fused recurrence for this cell, or None when only Keras's loop computes it."""
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


def fused_rnn(layer: layers.RNN, kind: CellKind, sequences, initial_state, mask, training):
    """What `layer.inner_loop` returns, computed by the fused recurrence for `layer.cell`."""
    cell, dtype = layer.cell, sequences.dtype
    if training and cell.dropout:
        # One dropout mask per sequence, the same at every step: as Keras's cells apply it.
        sequences = sequences * tf.expand_dims(cell.get_dropout_mask(sequences[:, 0, :]), 1)
    time_major = tf.transpose(sequences, (1, 0, 2))
    keep = None
    if mask is not None:
        mask = mask[0] if isinstance(mask, list | tuple) else mask
        keep = tf.expand_dims(tf.cast(tf.transpose(mask), dtype), -1)
    if layer.go_backwards:
        time_major = tf.reverse(time_major, [0])
        keep = None if keep is None else tf.reverse(keep, [0])
    scale = gate_scale(kind.tanh_gates, cell.units, dtype)  # see gate_activations
    kernel = tf.cast(cell.kernel, dtype) * scale
    input_bias, biases = None, ()
    if cell.use_bias:
        input_bias = tf.cast(cell.bias, dtype) * scale
        if isinstance(cell, layers.GRUCell):  # input and recurrent biases: [2, 3·units]
            input_bias, biases = input_bias[0], (input_bias[1],)
    recurrent_kernel = tf.cast(cell.recurrent_kernel, dtype) * scale
    # Rows of a batch are independent: one recurrence per core runs the loops side by side,
    # each with its own share of the input projection.
    shard_count = parallel_shards()
    layer.recurrence_routes[bool(training)] = (
        recurrence_route(dtype, bool(layer.unroll)),
        shard_count,
    )
    shards = []
    for inputs, states, shard_keep in zip(
        _split_rows(time_major, shard_count, axis=1),
        zip(*(_split_rows(tf.cast(s, dtype), shard_count, axis=0) for s in initial_state)),
        _split_rows(keep, shard_count, axis=1),
    ):
        shards.append(
            recurrence(
                kind,
                project_inputs(inputs, kernel, input_bias),
                recurrent_kernel,
                biases,
                states,
                shard_keep,
                all_steps=layer.return_sequences,
                unroll=bool(layer.unroll),
            )
        )
    final = [_concat(parts, axis=0) for parts in zip(*(f for _, f in shards))]
    if not layer.return_sequences:
        last = final[0] if keep is None or not layer.zero_output_for_mask else final[0] * keep[-1]
        return last, tf.expand_dims(last, 1), final
    hidden = _concat([h for h, _ in shards], axis=1)
    if keep is not None and layer.zero_output_for_mask:
        hidden = hidden * keep
    return hidden[-1], tf.transpose(hidden, (1, 0, 2)), final


def recurrence_route(dtype, unroll: bool) -> str:
    """`native` where rnnlab's ops compute the loop (float32, not unrolled), else `graph`."""
    if dtype == tf.float32 and not unroll and recurrence_ops() is not None:
        return "native"
    return "graph"


def project_inputs(time_major, kernel, bias):
    """Every step's inputs times the kernel, plus the bias: one matmul for the whole sequence.

    The bias enters as a kernel row over a column of ones, so its gradient is part of the
    matmul's, not a column sum (which ran single-threaded and slow here).
    """
    flat = tf.reshape(time_major, (-1, time_major.shape[-1]))
    if bias is not None:
        flat = tf.concat([flat, tf.ones_like(flat[:, :1])], axis=-1)
        kernel = tf.concat([kernel, [bias]], axis=0)
    steps = time_major.shape[0] or tf.shape(time_major)[0]
    return tf.reshape(tf.matmul(flat, kernel), (steps, -1, kernel.shape[-1]))


def _split_rows(rows, shards: int, axis: int) -> list:
    """`shards` near-equal slices of `rows` along `axis` (None gives Nones)."""
    if rows is None or shards == 1:
        return [rows] * shards
    count = tf.shape(rows)[axis]
    sizes = [count * (index + 1) // shards - count * index // shards for index in range(shards)]
    return tf.split(rows, tf.stack(sizes), num=shards, axis=axis)


def _concat(parts, axis: int):
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=axis)


def _where(keep, new, old):
    """`new` where keep is 1, `old` where it is 0 (a masked step holds its states)."""
    return tuple(o + keep * (n - o) for n, o in zip(new, old))


def recurrence(
    kind: CellKind, projected, kernel, biases, initial_states, keep, all_steps=True, unroll=False
):
    """Runs the cell over time-major `projected` [T, B, gates·units]; differentiable.

    `biases` holds the GRU's recurrent bias, else nothing. `keep` [T, B, 1] is 1 where a step
    counts and 0 where a mask holds the state, or None. Returns the states h_t of every step
    [T, B, units] (None unless `all_steps`) and the final states.
    """
    if recurrence_route(projected.dtype, unroll) == "native":
        return native_recurrence(
            recurrence_ops(), kind, projected, kernel, biases, initial_states, keep, all_steps
        )
    steps = projected.shape[0]
    if steps is None:  # a length known only when the batch arrives: no unrolling
        steps, unroll = tf.shape(projected)[0], False
    loop = _python_loop if unroll else _while_loop

    @tf.custom_gradient
    def run(projected, kernel, *rest):
        bias, initial = (rest[0] if biases else None), rest[len(biases) :]

        def forward(t, states):
            new, records = kind.step(projected[t], states, kernel, bias)
            if keep is not None:
                new = _where(keep[t], new, states)
            return new, (*new, *records)

        final, stacked = loop(forward, steps, tuple(initial), reverse=False)
        history, records = stacked[: kind.states], stacked[kind.states :]

        def gradient(*upstream):
            d_hidden = upstream[0] if all_steps else None
            d_final = upstream[1:] if all_steps else upstream
            # The states each step started from: for the derivatives and the kernel's gradient.
            previous = tuple(map(_step_starts, initial, history))
            factors, extra = kind.prepare(projected, previous, history, records)
            kernel_parts = tf.split(tf.transpose(kernel), kind.gates, axis=0)

            def backward(t, carried):
                gradients = list(carried)
                if d_hidden is not None:
                    gradients[0] = gradients[0] + d_hidden[t]
                if keep is not None:
                    kept = [g * keep[t] for g in gradients]
                    held = tuple(g - k for g, k in zip(gradients, kept))
                    gradients = kept
                d_previous, step_records = kind.backward(
                    tuple(f[t] for f in factors), gradients, kernel_parts
                )
                if keep is not None:
                    d_previous = tuple(d + h for d, h in zip(d_previous, held))
                return d_previous, step_records

            d_final = tuple(map(zeros_for_none, d_final, initial))
            d_initial, backward_records = loop(backward, steps, d_final, reverse=True)
            d_projected, d_inner = kind.finish(backward_records, extra)
            flat_inner = tf.reshape(d_inner, (-1, d_inner.shape[-1]))
            d_kernel = _kernel_gradient(previous[0], flat_inner)
            d_biases = tuple(tf.reduce_sum(flat_inner, axis=0) for _ in biases)
            return (d_projected, d_kernel, *d_biases, *d_initial)

        return ((history[0], *final) if all_steps else final), gradient

    return _sequence_and_final(run(projected, kernel, *biases, *initial_states), all_steps)


def native_recurrence(
    ops, kind: CellKind, projected, kernel, biases, initial_states, keep, all_steps=True
):
    """As `recurrence`, with every step in one C++ op each way (rnnlab.native)."""
    no_tensor = tf.zeros([0], projected.dtype)
    keep = no_tensor if keep is None else keep
    forward = getattr(ops, f"rnnlab_{kind.native}_forward")
    backward = getattr(ops, f"rnnlab_{kind.native}_backward")

    @tf.custom_gradient
    def run(projected, kernel, *rest):
        bias = rest[0] if biases else no_tensor
        initial = rest[len(biases) :]
        initial_c = initial[1] if kind.states == 2 else no_tensor
        history, cells, records = forward(projected, kernel, bias, initial[0], initial_c, keep)
        final = (history[-1], cells[-1]) if kind.states == 2 else (history[-1],)

        def gradient(*upstream):
            d_hidden = upstream[0] if all_steps and upstream[0] is not None else no_tensor
            d_final = [*map(zeros_for_none, upstream[-kind.states :], initial), no_tensor]
            d_projected, d_inner, d_initial_h, d_initial_c = backward(
                records, history, cells, initial[0], initial_c, kernel, d_hidden, *d_final[:2], keep
            )
            if d_inner.shape.rank == 1:  # the op says: the same as d_projected
                d_inner = d_projected
            flat_inner = tf.reshape(d_inner, (-1, d_inner.shape[-1]))
            d_kernel = _kernel_gradient(_step_starts(initial[0], history), flat_inner)
            d_biases = tuple(tf.reduce_sum(flat_inner, axis=0) for _ in biases)
            d_initial = (d_initial_h, d_initial_c)[: kind.states]
            return (d_projected, d_kernel, *d_biases, *d_initial)

        return ((history, *final) if all_steps else final), gradient

    return _sequence_and_final(run(projected, kernel, *biases, *initial_states), all_steps)


def forget_custom_gradients() -> int:
    """Drop the gradient functions `tf.custom_gradient` registered for earlier runs' graphs.

    Inside a `tf.function` (every Keras train step) each `tf.custom_gradient` call registers
    its gradient in TensorFlow's global registry under a new name and never removes it; the
    closure holds the whole traced graph. A sweep worker kept every model it ever trained:
    11,000 objects and 7.6 MB more a run, and its trials 40% slower after 250 of them
    (benchmarks/RESULTS.md, sweeps at scale). `train.run` calls this before it builds a
    model, when the graphs of earlier runs are no longer used. TensorFlow offers no public
    way: this edits its private registry, and a test checks that it still works.
    """
    registry = tf_ops._gradient_registry._registry
    stale = [name for name in registry if name.startswith("CustomGradient-")]
    for name in stale:
        del registry[name]
    return len(stale)


def _sequence_and_final(outputs, all_steps: bool):
    """(states of every step or None, [final states]) from what `run` returned."""
    if not all_steps:
        return None, list(outputs)
    return outputs[0], list(outputs[1:])


def _step_starts(initial, history):
    """The state each step started from: the initial one, then every step's but the last."""
    return tf.concat([tf.expand_dims(initial, 0), history[:-1]], axis=0)


def zeros_for_none(gradient, like):
    return tf.zeros_like(like) if gradient is None else gradient


def _kernel_gradient(previous, flat_inner):
    """Sum over steps and rows of h_{t-1}ᵀ · d(h_{t-1} @ kernel): one large matmul."""
    flat_previous = tf.reshape(previous, (-1, previous.shape[-1]))
    return tf.matmul(flat_previous, flat_inner, transpose_a=True)


def _python_loop(body, steps, carried, reverse):
    """`body(t, carried) -> (carried, per_step)` over t, stacking per_step along time."""
    collected = [None] * steps
    for t in reversed(range(steps)) if reverse else range(steps):
        carried, collected[t] = body(t, carried)
    return carried, tuple(tf.stack(parts) for parts in zip(*collected))


def _while_loop(body, steps, carried, reverse):
    """As `_python_loop`, in one tf.while_loop; the first step runs before it, for shapes."""
    first = steps - 1 if reverse else 0
    carried, per_step = body(first, carried)
    arrays = tuple(
        tf.TensorArray(p.dtype, size=steps, element_shape=p.shape).write(first, p) for p in per_step
    )

    def loop_body(i, carried, arrays):
        t = steps - 1 - i if reverse else i
        carried, per_step = body(t, carried)
        return i + 1, carried, tuple(a.write(t, p) for a, p in zip(arrays, per_step))

    _, carried, arrays = tf.while_loop(
        lambda i, *_: i < steps, loop_body, (tf.constant(1), carried, arrays)
    )
    return carried, tuple(a.stack() for a in arrays)
