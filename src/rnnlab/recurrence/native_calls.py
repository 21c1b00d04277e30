"""Python's side of rnnlab's native ops: each called with its inputs named, its backward op
wired in as the forward op's gradient. Keras's three cells share one pair of ops' inputs
(`native_recurrence`); the sLSTM's have their own (`native_slstm_recurrence`).

The ops (native/fused_cells.cc, native/scans.cc) take one forward and one backward pass
over a whole sequence each. Every call here names its inputs as the op's REGISTER_OP does,
so an argument can never land in another's place: an op whose inputs changed fails to
trace, naming the one it misses, instead of computing with the wrong tensor. Empty [0]
tensors stand for the optional inputs (no bias, no mask, a cell's missing second state).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from rnnlab.recurrence.cell_kinds import CellKind
from rnnlab.recurrence.custom_gradients import (
    kernel_gradient,
    sequence_and_final,
    step_starts,
    zeros_for_none,
)

if TYPE_CHECKING:
    from rnnlab.recurrence.cells import IndRNNCell, LinearRecurrentCell, S6Cell


def native_recurrence(
    ops, kind: CellKind, projected, kernel, biases, initial_states, keep, all_steps=True
):
    """As `fused.recurrence`, with every step in one C++ op each way (native/fused_cells.cc)."""
    no_tensor = tf.zeros([0], projected.dtype)
    keep = no_tensor if keep is None else keep
    forward = getattr(ops, f"rnnlab_{kind.native}_forward")
    backward = getattr(ops, f"rnnlab_{kind.native}_backward")

    @tf.custom_gradient
    def run(projected, kernel, *rest):
        bias = rest[0] if biases else no_tensor
        initial = rest[len(biases) :]
        initial_c = initial[1] if kind.states == 2 else no_tensor
        history, cells, records = forward(
            projected=projected,
            recurrent_kernel=kernel,
            recurrent_bias=bias,
            initial_h=initial[0],
            initial_c=initial_c,
            keep=keep,
        )
        final = (history[-1], cells[-1]) if kind.states == 2 else (history[-1],)

        def gradient(*upstream):
            d_hidden = upstream[0] if all_steps and upstream[0] is not None else no_tensor
            d_final = [*map(zeros_for_none, upstream[-kind.states :], initial), no_tensor]
            d_projected, d_inner, d_initial_h, d_initial_c = backward(
                records=records,
                h=history,
                c=cells,
                initial_h=initial[0],
                initial_c=initial_c,
                recurrent_kernel=kernel,
                d_h=d_hidden,
                d_final_h=d_final[0],
                d_final_c=d_final[1],
                keep=keep,
            )
            if d_inner.shape.rank == 1:  # the op says: the same as d_projected
                d_inner = d_projected
            flat_inner = tf.reshape(d_inner, (-1, d_inner.shape[-1]))
            d_kernel = kernel_gradient(step_starts(initial[0], history), flat_inner)
            d_biases = tuple(tf.reduce_sum(flat_inner, axis=0) for _ in biases)
            d_initial = (d_initial_h, d_initial_c)[: kind.states]
            return (d_projected, d_kernel, *d_biases, *d_initial)

        return ((history, *final) if all_steps else final), gradient

    return sequence_and_final(run(projected, kernel, *biases, *initial_states), all_steps)


def native_slstm_recurrence(ops, projected, kernel, initial_states, keep, all_steps=True):
    """As `fused.recurrence`, for xLSTM's sLSTM (native/fused_cells.cc): `projected` is
    x W + b [T, B, 4·units] in the cell's gate order, `kernel` its R [heads, w, 4w], the
    states h, c, n, m. The op's backward pass returns the gradient of every step's
    pre-activations; R's is one batched matmul per head here, h_{t-1} of the head's units
    times the gradient of its four gates."""
    no_tensor = tf.zeros([0], projected.dtype)
    keep = no_tensor if keep is None else keep

    @tf.custom_gradient
    def run(projected, kernel, *initial):
        h, c, n, m, records = ops.rnnlab_slstm_forward(
            projected=projected,
            recurrent_kernel=kernel,
            initial_h=initial[0],
            initial_c=initial[1],
            initial_n=initial[2],
            initial_m=initial[3],
            keep=keep,
        )
        final = (h[-1], c[-1], n[-1], m[-1])

        def gradient(*upstream):
            d_hidden = upstream[0] if all_steps and upstream[0] is not None else no_tensor
            d_final = list(map(zeros_for_none, upstream[-4:], initial))
            d_projected, *d_initial = ops.rnnlab_slstm_backward(
                records=records,
                c=c,
                n=n,
                initial_c=initial[1],
                initial_n=initial[2],
                recurrent_kernel=kernel,
                d_h=d_hidden,
                d_final_h=d_final[0],
                d_final_c=d_final[1],
                d_final_n=d_final[2],
                d_final_m=d_final[3],
                keep=keep,
            )
            heads, width = kernel.shape[0], kernel.shape[1]
            previous = tf.reshape(step_starts(initial[0], h), (-1, heads, width))
            d_gates = tf.reshape(d_projected, (-1, 4, heads, width))
            d_kernel = tf.einsum("nga,nqgb->gaqb", previous, d_gates)
            return (d_projected, tf.reshape(d_kernel, kernel.shape), *d_initial)

        return ((h, *final) if all_steps else final), gradient

    return sequence_and_final(run(projected, kernel, *initial_states), all_steps)


def native_scan(
    ops,
    cell: LinearRecurrentCell | IndRNNCell,
    sequences,
    initial,
    keep,
    every_state=True,
    shards=1,
):
    """(every step's state, or None if not `every_state`; the last state) by rnnlab's native
    ops for the cell (native/scans.cc), its rows split into `shards` between the cores.

    The ops project the inputs themselves, a few steps at a time, so no [B, T, W] tensor of
    projected inputs is ever made. A layer that reads the last state only asks for that
    alone: for an output nobody reads, TensorFlow's graph-mode gradient hands the custom
    gradient a [B, T, S] tensor of zeros, which cost 1.2 ms a batch at 64 × 1,000 × 64 (a
    tenth of minLSTM's training step).
    """
    forward = getattr(ops, f"rnnlab_{cell.native_scan}_forward")
    backward = getattr(ops, f"rnnlab_{cell.native_scan}_backward")
    nothing = tf.zeros([0], tf.float32)
    keep = nothing if keep is None else tf.cast(keep[:, :, 0], tf.float32)

    @tf.custom_gradient
    def run(inputs, kernel, bias, parameters, initial):
        states = forward(
            inputs=inputs,
            kernel=kernel,
            bias=bias,
            parameters=parameters,
            initial=initial,
            keep=keep,
            shards=shards,
        )

        def gradient(*upstream):
            # upstream is (d_states, d_final), or (d_final,) for the last state alone; an
            # unread output's gradient may also come as None: no [B, T, S] of zeros is
            # made or read.
            d_states = upstream[0] if every_state else None
            return backward(
                inputs=inputs,
                kernel=kernel,
                bias=bias,
                parameters=parameters,
                states=states,
                initial=initial,
                d_states=nothing if d_states is None else d_states,
                d_final=zeros_for_none(upstream[-1], initial),
                keep=keep,
                shards=shards,
            )

        final = states[:, -1]
        return ((states, final) if every_state else final), gradient

    bias = nothing if cell.bias is None else tf.convert_to_tensor(cell.bias)
    parameters = tf.convert_to_tensor(cell.scan_parameters())
    outputs = run(sequences, tf.convert_to_tensor(cell.kernel), bias, parameters, initial)
    return outputs if every_state else (None, outputs)


def native_selective_scan(ops, cell: S6Cell, sequences, inputs, initial, keep, shards=1):
    """(every step's output [B, T, units], the last state) of S6 by rnnlab's native ops
    (native/scans.cc), its rows split into `shards` between the cores.

    The op projects the inputs itself, 64 steps at a time, and runs the recurrence and the
    readout in one loop, so neither the [B, T, 2·units + 2·state_units] projection nor the
    [B, T, units·state_units] states (16 times the outputs at the default N) are made; its
    backward pass recomputes the states 64 steps at a time from the ones it kept.
    `sequences` are the inputs after the cell's dropout, `inputs` before: as in the cell's
    step, C and the skip D v read the undropped ones (passed only when they differ).
    """
    nothing = tf.zeros([0], tf.float32)
    keep = nothing if keep is None else tf.cast(keep[:, :, 0], tf.float32)
    readout_inputs = nothing if inputs is sequences else inputs

    @tf.custom_gradient
    def run(sequences, readout_inputs, kernel, bias, a, skip, initial):
        weights = {"kernel": kernel, "bias": bias, "a": a, "skip": skip}
        outputs, final, checkpoints = ops.rnnlab_selective_scan_forward(
            inputs=sequences,
            readout_inputs=readout_inputs,
            initial=initial,
            keep=keep,
            shards=shards,
            **weights,
        )

        def gradient(d_outputs, d_final):
            return ops.rnnlab_selective_scan_backward(
                inputs=sequences,
                readout_inputs=readout_inputs,
                initial=initial,
                keep=keep,
                checkpoints=checkpoints,
                d_outputs=nothing if d_outputs is None else d_outputs,
                d_final=zeros_for_none(d_final, initial),
                shards=shards,
                **weights,
            )

        return (outputs, final), gradient

    bias = nothing if cell.bias is None else tf.convert_to_tensor(cell.bias)
    kernel, skip = tf.convert_to_tensor(cell.kernel), tf.convert_to_tensor(cell.skip)
    return run(sequences, readout_inputs, kernel, bias, cell.state_matrix(), skip, initial)
