"""A faster recurrence for Keras's own SimpleRNN, LSTM and GRU cells, with the same maths.

Keras runs a cell step by step and lets TensorFlow differentiate the loop. On a CPU each
small op in a step costs a few microseconds of dispatch whatever its size, and the one
recurrent matmul of a step cannot use more than one core. So here:
- the input projection of every step is one large matmul before the loop;
- the backward pass is written by hand (`cell_kinds`): whatever does not depend on the
  incoming gradient is computed for all steps at once, the backward loop costs one small
  matmul and a handful of ops per step, and the kernels' gradients are single large
  matmuls after it;
- the rows of a batch are independent, so one recurrence per core runs side by side;
- the time loop runs in rnnlab's native C++ ops where they are built (`native_calls`),
  one op for all forward steps and one for all backward steps; else in TensorFlow's graph
  (`graph_loop`).
This module is the route itself: it prepares a layer's sequence as Keras's loop would
(dropout, masks, direction), shards the rows, picks the loop, and hands back what
`inner_loop` returns. Gates, initialisers, dropout on the inputs, masks and the results
(within float tolerance) are Keras's; anything else (recurrent dropout, other activations,
a user's own cell) takes the standard Keras path. xLSTM's sLSTM takes this route too, with
its own native ops (its R is block-diagonal by heads, and it has four states), and only
where they run: it has no graph loop. docs/results/benchmarks.md has the measurements.
"""

from __future__ import annotations

import tensorflow as tf
from keras import layers

from rnnlab.recurrence.cell_kinds import CellKind, NativeCellKind, concat, gate_scale
from rnnlab.recurrence.graph_loop import graph_recurrence
from rnnlab.recurrence.masks import input_dropout, padding_mask
from rnnlab.recurrence.native import recurrence_ops
from rnnlab.recurrence.native_calls import native_recurrence, native_slstm_recurrence
from rnnlab.threads import parallel_shards


def fused_rnn(
    layer: layers.RNN, kind: CellKind | NativeCellKind, sequences, initial_state, mask, training
):
    """What `layer.inner_loop` returns, computed by the fused recurrence for `layer.cell`."""
    cell, dtype = layer.cell, sequences.dtype
    time_major = tf.transpose(input_dropout(cell, sequences, training), (1, 0, 2))
    keep = None
    mask = padding_mask(mask)
    if mask is not None:
        keep = tf.expand_dims(tf.cast(tf.transpose(mask), dtype), -1)
    if layer.go_backwards:
        time_major = tf.reverse(time_major, [0])
        keep = None if keep is None else tf.reverse(keep, [0])
    kernel, input_bias, recurrent_kernel, biases = fused_weights(cell, kind, dtype)
    # Rows of a batch are independent: one recurrence per core runs the loops side by side,
    # each with its own share of the input projection.
    route = recurrence_route(dtype, bool(layer.unroll))
    shard_count = parallel_shards(route)
    layer.recurrence_routes[bool(training)] = (route, shard_count)
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
    final = [concat(parts, axis=0) for parts in zip(*(f for _, f in shards))]
    shown = None  # 1 where a step's output is its h, 0 where Keras's loop outputs zeros
    if keep is not None:
        # A masked step repeats the last output, and zeros before any (Keras's loop starts
        # from zero outputs, whatever the initial states), or gives zeros if it is told to.
        shown = keep if layer.zero_output_for_mask else tf.minimum(tf.cumsum(keep, axis=0), 1)
    if not layer.return_sequences:
        last = final[0] if shown is None else final[0] * shown[-1]
        return last, tf.expand_dims(last, 1), final
    hidden = concat([h for h, _ in shards], axis=1)
    if shown is not None:
        hidden = hidden * shown
    return hidden[-1], tf.transpose(hidden, (1, 0, 2)), final


def fused_weights(cell, kind: CellKind | NativeCellKind, dtype):
    """(input kernel, input bias or None, recurrent kernel, recurrent biases) as `kind`'s loop
    reads them: Keras's cells' with the sigmoid gates' columns halved (`gate_activations`)
    and the GRU's recurrent bias apart; the sLSTM's as the cell holds them (its ops compute
    their sigmoids whole, and read R as [heads, head width, 4·head width])."""
    if isinstance(kind, NativeCellKind):
        weights = (cell.kernel, cell.bias, cell.recurrent_kernel)
        kernel, bias, recurrent_kernel = (tf.cast(w, dtype) for w in weights)
        return kernel, bias, recurrent_kernel, ()
    scale = gate_scale(kind.tanh_gates, cell.units, dtype)  # see gate_activations
    kernel = tf.cast(cell.kernel, dtype) * scale
    input_bias = None
    biases: tuple[tf.Tensor, ...] = ()  # the GRU's recurrent bias, when it has one
    if cell.use_bias:
        input_bias = tf.cast(cell.bias, dtype) * scale
        if isinstance(cell, layers.GRUCell):  # input and recurrent biases: [2, 3·units]
            input_bias, biases = input_bias[0], (input_bias[1],)
    return kernel, input_bias, tf.cast(cell.recurrent_kernel, dtype) * scale, biases


def fused_route(kind: CellKind | NativeCellKind, dtype, unroll: bool) -> str | None:
    """How `fused_rnn` would run `kind`'s sequence (`recurrence_route`), or None where it
    cannot: a kind with native ops only, where they do not run."""
    route = recurrence_route(dtype, unroll)
    return None if isinstance(kind, NativeCellKind) and route != "native" else route


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


def recurrence(
    kind: CellKind | NativeCellKind,
    projected,
    kernel,
    biases,
    initial_states,
    keep,
    all_steps=True,
    unroll=False,
):
    """Runs the cell over time-major `projected` [T, B, gates·units]; differentiable.

    `biases` holds the GRU's recurrent bias, else nothing. `keep` [T, B, 1] is 1 where a step
    counts and 0 where a mask holds the state, or None. Returns the states h_t of every step
    [T, B, units] (None unless `all_steps`) and the final states.
    """
    if isinstance(kind, NativeCellKind):
        if fused_route(kind, projected.dtype, unroll) is None:
            raise ValueError(f"the {kind.native} cell runs by rnnlab's native ops only")
        return native_slstm_recurrence(
            recurrence_ops(), projected, kernel, initial_states, keep, all_steps
        )
    if recurrence_route(projected.dtype, unroll) == "native":
        return native_recurrence(
            recurrence_ops(), kind, projected, kernel, biases, initial_states, keep, all_steps
        )
    return graph_recurrence(
        kind, projected, kernel, biases, initial_states, keep, all_steps, unroll
    )
