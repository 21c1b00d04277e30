"""A whole sequence of a linear recurrence at once: h_t = a_t ⊙ h_{t-1} + b_t for every t.

A step loop costs T dependent steps, each a few small ops; for minGRU, minLSTM, the LRU, S6,
RG-LRU and HGRN (rnnlab.recurrence.cells) the coefficients a_t, b_t depend on the inputs
only, so every step's state follows from prefix products and sums, which a few large ops
compute (IndRNN's elementwise but non-linear step has no such form: only the native ops,
which step through the sequence in C++, run it here; without them, Keras's step loop):
- rnnlab's native ops (`native_calls.native_scan`), fastest by far on a CPU: input
  projection, gates and recurrence fused, in one pass over memory each way, the rows split
  between the cores (for S6, `native_calls.native_selective_scan`: the recurrence and its
  readout in one loop, so its units × state_units states a step are never stored);
- where they did not build, `associative_scan`: Keras's
  associative scan of (a, b) pairs, log2(T) rounds of elementwise ops, for real and complex
  (the LRU's) coefficients alike.
The papers' log-space scan (cumulative sum and cumulative log-sum-exp of log a, log b) ran
no faster here and, in float32, loses the gradient over 1,000 steps: log A_t reaches about
-1,000, where float32 resolves 1e-4, and the bias gradients came out 10% off.
`benchmarks/recurrence_speed.py --cells modern` measures the routes against each other and
against the step loop (docs/results/benchmarks.md). Masked (padded) steps keep the state:
a = 1, b = 0.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from rnnlab.recurrence.cells import LinearRecurrentCell, LRUCell, S6Cell
from rnnlab.recurrence.masks import input_dropout, padding_mask
from rnnlab.recurrence.native import recurrence_ops
from rnnlab.recurrence.native_calls import native_scan, native_selective_scan
from rnnlab.threads import parallel_shards


def scans_in_parallel(cell, dtype) -> bool:
    """Whether `scan_layer` computes this cell's sequences of `dtype`: a linear-recurrence
    cell that has not asked for its own step loop always can (the native ops, else the
    associative scan); a cell whose step is elementwise but not linear (IndRNN) names its
    native ops by `native_scan`, and only they compute it, in float32."""
    if isinstance(cell, LinearRecurrentCell):
        return cell.parallel_scan
    return (
        getattr(cell, "native_scan", None) is not None
        and tf.as_dtype(dtype) == tf.float32
        and recurrence_ops() is not None
    )


def _combine(earlier, later):
    """Two steps in one: h ↦ a2 (a1 h + b1) + b2."""
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def associative_scan(a, b, initial):
    """h_t for all t, along axis 1 (batch, steps, units), real or complex, from h_0 = initial."""
    b = tf.concat([a[:, :1] * initial[:, None] + b[:, :1], b[:, 1:]], axis=1)
    if a.shape[1] is None:  # Keras's scan needs the length when the graph is built
        return _sequential_scan(a, b)
    _, states = keras.ops.associative_scan(_combine, (a, b), axis=1)
    return tf.ensure_shape(states, b.shape)  # the scan's slicing loses the static shape


def _sequential_scan(a, b):
    """The same h_t = a_t h_(t-1) + b_t one step at a time, for sequences whose length is
    known only when a batch arrives (text batched by length); b_0 already holds h_0."""
    a, b = (tf.transpose(x, [1, 0, 2]) for x in (a, b))  # time-major for tf.scan
    states = tf.scan(lambda h, ab: ab[0] * h + ab[1], (a, b), initializer=tf.zeros_like(b[0]))
    return tf.transpose(states, [1, 0, 2])


def steps_in_reading_order(layer: keras.layers.RNN, sequences, mask):
    """The sequence and its keep mask [B, T, 1] (None without padding) in the order the
    layer reads the steps: Keras's loop returns a backwards layer's outputs in that order."""
    keep = None
    mask = padding_mask(mask)
    if mask is not None:
        keep = tf.cast(mask, tf.bool)[:, :, None]
    if layer.go_backwards:
        sequences = tf.reverse(sequences, [1])
        keep = None if keep is None else tf.reverse(keep, [1])
    return sequences, keep


def scan_layer(layer: keras.layers.RNN, sequences, initial_state, mask, training):
    """What `layer.inner_loop` returns, for a cell that `scans_in_parallel`, by a parallel
    scan or the native ops."""
    cell = layer.cell
    sequences, keep = steps_in_reading_order(layer, sequences, mask)
    inputs = sequences  # what the readout sees, as in the cell's step
    sequences = input_dropout(cell, sequences, training)
    initial = tf.cast(initial_state[0], sequences.dtype)
    ops = recurrence_ops() if sequences.dtype == tf.float32 else None
    if ops is not None and isinstance(cell, S6Cell) and cell.native_scan is not None:
        # S6's op returns the outputs read out, not the states: nothing to read out here.
        shards = parallel_shards()
        layer.recurrence_routes[bool(training)] = ("native_scan", shards)
        outputs, final = native_selective_scan(ops, cell, sequences, inputs, initial, keep, shards)
        if not layer.return_sequences and keep is None:
            last = outputs[:, -1]
            return last, last[:, None], [final]
        return loop_results(layer, outputs, keep, [final])
    if ops is not None and cell.native_scan is not None:
        shards = parallel_shards()
        layer.recurrence_routes[bool(training)] = ("native_scan", shards)
        every_state = layer.return_sequences or keep is not None
        states, final = native_scan(ops, cell, sequences, initial, keep, every_state, shards)
    elif isinstance(cell, LRUCell):
        states = _complex_states(cell, cell.project(sequences), initial, keep)
        final = states[:, -1]
    else:
        states = _real_states(cell, cell.project(sequences), initial, keep)
        final = states[:, -1]
    if not layer.return_sequences and keep is None:  # only the last step's output is read
        last = cell.readout(final, inputs[:, -1])
        return last, last[:, None], [final]
    return loop_results(layer, cell.readout(states, inputs), keep, [final])


def loop_results(layer: keras.layers.RNN, outputs, keep, final_states):
    """What `inner_loop` returns from every step's output [B, T, units] as computed, and the
    final states: under a mask, outputs as Keras's loop gives them."""
    if keep is not None:
        outputs = repeat_over_masked_steps(outputs, keep)
    if keep is not None and layer.zero_output_for_mask:
        outputs = tf.where(keep, outputs, tf.zeros_like(outputs))
    last = outputs[:, -1]
    if not layer.return_sequences:
        return last, last[:, None], final_states
    return last, outputs, final_states


def _real_states(cell: LinearRecurrentCell, parts, initial, keep):
    a, b = cell.coefficients(parts)
    if keep is not None:
        a, b = tf.where(keep, a, tf.ones_like(a)), tf.where(keep, b, tf.zeros_like(b))
    return associative_scan(a, b, initial)


def _complex_states(cell: LRUCell, parts, initial, keep):
    """The LRU's [Re x, Im x] for every step, scanned as complex numbers (complex64 at least:
    TensorFlow has no bfloat16 complex type)."""
    dtype = initial.dtype
    (lambda_real, lambda_imaginary), (b_real, b_imaginary) = (
        [tf.cast(part, tf.float64 if dtype == tf.float64 else tf.float32) for part in pair]
        for pair in cell.coefficients(parts)
    )
    initial = tf.cast(initial, lambda_real.dtype)
    eigenvalues = tf.complex(lambda_real, lambda_imaginary)
    b = tf.complex(b_real, b_imaginary)
    a = tf.broadcast_to(eigenvalues, tf.shape(b))
    if keep is not None:
        a = tf.where(keep, a, tf.ones_like(a))
        b = tf.where(keep, b, tf.zeros_like(b))
    real, imaginary = tf.split(initial, 2, axis=-1)
    states = associative_scan(a, b, tf.complex(real, imaginary))
    return tf.cast(tf.concat([tf.math.real(states), tf.math.imag(states)], axis=-1), dtype)


def repeat_over_masked_steps(outputs, keep):
    """A masked step repeats the last output, as Keras's loop does (zeros before any): each
    step's output is gathered from the last kept step, found by a running maximum of kept
    positions in log2(T) shifts (a tenth of the associative scan's graph, so a model traces
    in half the time)."""
    steps = outputs.shape[1]
    if steps is None:  # the length of a batch is known only when it arrives
        nothing, once = tf.zeros_like(outputs), tf.ones_like(outputs)
        return associative_scan(
            tf.where(keep, nothing, once), tf.where(keep, outputs, nothing), nothing[:, 0]
        )
    positions = tf.where(keep[..., 0], tf.range(steps)[None], -1)  # [B, T]
    shift = 1
    while shift < steps:
        before = tf.pad(positions[:, :-shift], [[0, 0], [shift, 0]], constant_values=-1)
        positions = tf.maximum(positions, before)
        shift *= 2
    repeated = tf.gather(outputs, tf.maximum(positions, 0), batch_dims=1)
    return tf.where((positions >= 0)[..., None], repeated, tf.zeros_like(repeated))
