"""The mLSTM's whole sequence in chunks: matmuls within a chunk, a recurrence between them.

The mLSTM's gates read the inputs only, so its memory after step t is a weighted sum,
C_t = Σ_{j≤t} exp(F_t - F_j + ĩ_j) v_j k_jᵀ (F the running sum of log σ(f̃)), and its output
a masked, decay-weighted attention over the steps so far. Computing that over all T steps
at once costs T² memory; step by step, T dependent steps of small ops. In between (Beck et
al. 2024, appendix; NX-AI/xlstm's `chunkwise_simple`), the sequence is cut into chunks of
`chunk_size` steps L:
- within a chunk, every step's output at once from the L × L decay matrix
  D_tj = exp(F_t - F_j + ĩ_j - m_t) (j ≤ t) times q_tᵀ k_j, plus the memory the chunk
  started with, scaled by exp(F_t + m_start - m_t);
- between chunks, the memory, normaliser and stabiliser at each chunk's end, from the one
  before: T / L steps of a tf.scan.
Each row's stabiliser m_t = max(F_t + m_start, max_j(F_t - F_j + ĩ_j)) is exactly the step
loop's m_t, so the two agree to rounding, final states included. A padded (masked) step
has f = 1 and i = 0: it keeps the state, as in Keras's loop; a length that is not a whole
number of chunks is padded the same way.

Where the time goes (issue 46, 4 heads of 16 units): not in the matmuls' arithmetic but in
passes over memory, the L × L decay matrices above all, and in the many small batched
matmuls. So the within-chunk product has its gradient written out (`within_chunks`: two
passes over L × L backward, where autodiff made many more), the normaliser rides along as
one more row of the memory (one matmul for C q and nᵀ q), the projections come out of their
matmul already laid out by chunk, no row stabiliser is differentiated (no output depends on
it), and sequences whose length is known are padded only when they must be. Between chunks
the T / L steps stay a `tf.scan`: computing every chunk's start at once, as a decay matrix
over chunks, loses float32 precision as the decay's running sum grows with T.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from rnnlab.recurrence.masks import input_dropout
from rnnlab.recurrence.scan import loop_results, steps_in_reading_order
from rnnlab.recurrence.xlstm import MLSTMCell

# The log input gate of a step that writes nothing: exp of it is 0, and, unlike -inf, it
# leaves no inf - inf in a difference (bfloat16 has float32's range: it holds it too).
NOTHING_WRITTEN = -1e30


def nothing_like(x):
    return tf.fill(tf.shape(x), tf.constant(NOTHING_WRITTEN, x.dtype))


def chunks_in_parallel(cell) -> bool:
    """True for an mLSTM cell that has not asked for its own step loop."""
    return isinstance(cell, MLSTMCell) and cell.parallel_chunks


def chunkwise_layer(layer: keras.layers.RNN, sequences, initial_state, mask, training):
    """What `layer.inner_loop` returns, for an `MLSTMCell`, computed chunk by chunk."""
    cell = layer.cell
    sequences, keep = steps_in_reading_order(layer, sequences, mask)
    sequences = input_dropout(cell, sequences, training)
    heads, width, units, chunk_size = cell.heads, cell.head_units, cell.units, cell.chunk_size
    batch, dtype = tf.shape(sequences)[0], sequences.dtype
    # A length known when the graph is traced pads (and trims) only if it must.
    steps = sequences.shape[1] if sequences.shape[1] is not None else tf.shape(sequences)[1]
    padding = (-steps) % chunk_size
    padded = not (isinstance(padding, int) and padding == 0)

    def pad(x, value=0.0):
        if not padded:
            return x
        return tf.pad(x, [[0, 0], [0, padding], [0, 0]], constant_values=value)

    query, key, value, output_gate = projections_in_chunks(cell, pad(sequences))
    input_gate, forget_gate = tf.split(
        tf.matmul(sequences, tf.cast(cell.gate_kernel, dtype)) + tf.cast(cell.gate_bias, dtype),
        2,
        axis=-1,
    )
    log_forget = tf.math.log_sigmoid(forget_gate)
    if keep is not None:
        log_forget = tf.where(keep, log_forget, tf.zeros_like(log_forget))
        input_gate = tf.where(keep, input_gate, nothing_like(input_gate))
    log_i, log_f = (
        tf.transpose(tf.reshape(x, [batch, -1, chunk_size, heads]), [0, 3, 1, 2])
        for x in (pad(input_gate, NOTHING_WRITTEN), pad(log_forget))
    )  # [B, heads, chunks, L]
    memory, normaliser, stabiliser = (tf.cast(state, dtype) for state in initial_state)
    start = (
        tf.reshape(memory, [batch, heads, width, width]),
        tf.reshape(normaliser, [batch, heads, width]),
        stabiliser,
    )
    readout, (memory, normaliser, stabiliser) = mlstm_chunkwise(
        query, key, value, log_i, log_f, start
    )
    outputs = tf.sigmoid(output_gate) * readout  # [B, heads, chunks, L, d]
    outputs = tf.reshape(tf.transpose(outputs, [0, 2, 3, 1, 4]), [batch, -1, units])
    if padded:  # a split's gradient is one concat; a slice's is a slower pass
        outputs = tf.split(outputs, [steps, padding], axis=1)[0]
    final = [
        tf.reshape(memory, [batch, heads * width * width]),
        tf.reshape(normaliser, [batch, units]),
        stabiliser,
    ]
    return loop_results(layer, outputs, keep, final)


def projections_in_chunks(cell: MLSTMCell, sequences):
    """`cell.projections`' q, k (scaled), v and õ of sequences [B, T, features] (T a whole
    number of chunks), each [B, heads, chunks, L, d], v with an extra entry 1 (see
    `mlstm_chunkwise`): the bias folded in as a column of ones (its gradient is then the
    matmul's; a bias add's is a slow sum over every step), the key's 1/√d folded into its
    weights, and v's 1 a column of zero weights and bias 1."""
    heads, width = cell.heads, cell.head_units
    dtype = sequences.dtype
    kernel, bias = (tf.cast(weight, dtype) for weight in (cell.kernel, cell.bias))
    weights = tf.concat([kernel, bias[None]], 0)  # [features + 1, 4 · units]
    features = weights.shape[0]
    by_head = tf.transpose(tf.reshape(weights, [features, 4, heads, width]), [1, 2, 0, 3])
    query, key, value, output = tf.unstack(by_head)  # each [heads, features + 1, d]
    one = np.zeros((1, features, 1))
    one[..., -1, 0] = 1.0
    value = tf.concat([value, tf.tile(tf.constant(one, dtype), [heads, 1, 1])], -1)
    with_ones = tf.concat([sequences, tf.ones_like(sequences[..., :1])], -1)
    query, key, output = (
        tf.squeeze(part, 0)  # a squeeze: no copy
        for part in tf.split(
            _in_chunks(with_ones, tf.stack([query, key / math.sqrt(width), output]), cell),
            3,
        )
    )
    return query, key, tf.squeeze(_in_chunks(with_ones, value[None], cell), 0), output


def _in_chunks(sequences, weights, cell: MLSTMCell):
    """sequences [B, T, features] times each of `n` heads' weights [n, heads, features, e],
    as [n, B, heads, chunks, L, e]. Inputs narrower than a head's output are multiplied
    chunk by chunk, each chunk's steps by each head's weights: the product is then all
    writes, straight into this layout. Wider ones take one matmul and a transpose."""
    batch, features = tf.shape(sequences)[0], sequences.shape[-1]
    parts, heads, _, width = weights.shape
    if features <= width:
        steps = tf.reshape(sequences, [1, batch, 1, -1, cell.chunk_size, features])
        return tf.matmul(steps, weights[:, None, :, None])
    columns = tf.reshape(tf.transpose(weights, [2, 0, 1, 3]), [features, -1])
    projected = tf.matmul(tf.reshape(sequences, [-1, features]), columns)
    projected = tf.reshape(projected, [batch, -1, cell.chunk_size, parts, heads, width])
    return tf.transpose(projected, [3, 0, 4, 1, 2, 5])


def running_max(x):
    """max_{j ≤ t} x_j along the last axis (of static length), in log₂ L shifted maxima."""
    length, shift = x.shape[-1], 1
    while shift < length:
        widths = [[0, 0]] * (len(x.shape) - 1) + [[shift, 0]]
        x = tf.maximum(x, tf.pad(x[..., :-shift], widths, constant_values=NOTHING_WRITTEN))
        shift *= 2
    return x


def within_chunks(query, key, value, row_log, column_log):
    """Σ_{j ≤ t} (q_t · k_j) exp(r_t + c_j) v_j for every step t of every chunk at once:
    q, k [..., L, d], v [..., L, e], r and c [..., L] (the decay's log split into a row and
    a column term). Its gradient is written out: autodiff of the same expression makes
    about four times as many passes over the L × L matrices, which are most of the work
    (at 4 heads of 16 the matmuls are narrow; the elementwise passes cost more)."""
    length = query.shape[-2]
    causal = tf.constant(np.tril(np.ones((length, length), bool)))
    nothing = tf.constant(NOTHING_WRITTEN, query.dtype)

    @tf.custom_gradient
    def product(query, key, value, row_log, column_log):
        log_decay = row_log[..., :, None] + column_log[..., None, :]
        decay = tf.exp(tf.where(causal, log_decay, nothing))
        scores = tf.matmul(query, key, transpose_b=True) * decay
        readout = tf.matmul(scores, value)

        def gradient(upstream):
            d_scores = tf.matmul(upstream, value, transpose_b=True)
            d_similarity = d_scores * decay
            d_value = tf.matmul(scores, upstream, transpose_a=True)
            # ∂/∂ log decay_tj is d_scores_tj · scores_tj; its sums over j and over t are
            # Σ_e upstream_te readout_te and Σ_e value_je d_value_je, no L × L pass each.
            return (
                tf.matmul(d_similarity, key),
                tf.matmul(d_similarity, query, transpose_a=True),
                d_value,
                tf.reduce_sum(upstream * readout, axis=-1),
                tf.reduce_sum(value * d_value, axis=-1),
            )

        return readout, gradient

    return product(query, key, value, row_log, column_log)


def mlstm_chunkwise(query, key, value, log_i, log_f, start):
    """Every step's h̃ and the final (C, n, m), chunk by chunk: q, k (already scaled)
    [B, heads, chunks, L, d], v [B, heads, chunks, L, d + 1], ĩ and log f [B, heads, chunks,
    L] (a step that is not to be read in: ĩ = NOTHING_WRITTEN, log f = 0), and the state the
    sequence starts in: C [B, heads, d, d] (v by k), n [B, heads, d], m [B, heads]. h̃ is
    [B, heads, chunks, L, d].

    The normaliser is the memory of a value that is always 1: v's extra entry is that 1,
    C gets n as an extra row, and one matmul computes both C q and nᵀ q (each step's too)."""
    width, chunks = query.shape[-1], tf.shape(query)[2]
    q, k, v = query, key, value

    # F_t within each chunk (inclusive); step j's log weight at step t ≥ j in the same chunk
    # is F_t + (ĩ_j - F_j), at the chunk's end F_L + (ĩ_j - F_j).
    decay = tf.cumsum(log_f, axis=-1)
    total = decay[..., -1]
    written_log = log_i - decay
    local_max = tf.reduce_max(written_log, axis=-1)
    weights = tf.exp(written_log - local_max[..., None])
    written = tf.matmul(v * weights[..., None], k, transpose_a=True)  # [B, h, c, d + 1, d]

    def next_chunk(state, chunk):
        memory, stabiliser = state
        kept, written_max, chunk_memory = chunk
        new = tf.maximum(kept + stabiliser, written_max)
        old_scale, new_scale = tf.exp(kept + stabiliser - new), tf.exp(written_max - new)
        return old_scale[..., None, None] * memory + new_scale[..., None, None] * chunk_memory, new

    def chunk_major(x):
        return tf.transpose(x, [2, 0, 1, *range(3, len(x.shape))])

    memory, normaliser, stabiliser = start
    first = (tf.concat([memory, normaliser[..., None, :]], -2), stabiliser)
    ends = tf.scan(
        next_chunk,
        tuple(chunk_major(x) for x in (total, total + local_max, written)),
        initializer=first,
    )
    # The state each chunk starts from: the initial one, then each chunk's end but the last,
    # which is the final state (split off, not sliced: a split's gradient is one concat, a
    # slice's a slower pass over every chunk).
    (memory, final_memory), (stabiliser, final_stabiliser) = (
        tf.split(tf.concat([initial[None], every], 0), [chunks, 1])
        for initial, every in zip(first, ends)
    )
    memory, stabiliser = (
        tf.transpose(x, [1, 2, 0, *range(3, len(x.shape))]) for x in (memory, stabiliser)
    )
    final_memory, final_stabiliser = final_memory[0], final_stabiliser[0]

    # Within each chunk: one stabiliser per row, m_t = F_t + max(m_start, max_{j≤t} ĩ_j - F_j),
    # the step loop's m_t. No output depends on it (it scales numerator and denominator
    # alike), so its gradient is left out: what remains is the exact gradient.
    row_stabiliser = tf.stop_gradient(
        decay + tf.maximum(stabiliser[..., None], running_max(written_log))
    )
    row_log = decay - row_stabiliser
    carried_scale = tf.exp(stabiliser[..., None] + row_log)  # the start memory's weight
    numerator = within_chunks(q, k, v, row_log, written_log) + carried_scale[..., None] * (
        tf.matmul(q, memory, transpose_b=True)
    )
    numerator, overlap = tf.split(numerator, [width, 1], axis=-1)
    # Times the reciprocal, not divided: a division's gradient makes more passes over h̃.
    denominator = tf.maximum(tf.abs(overlap), tf.exp(-row_stabiliser)[..., None])
    final_memory, final_normaliser = tf.split(final_memory, [width, 1], axis=-2)
    final = (final_memory, final_normaliser[..., 0, :], final_stabiliser)
    return numerator * tf.math.reciprocal(denominator), final
