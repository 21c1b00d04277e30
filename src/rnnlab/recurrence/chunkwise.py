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
"""

from __future__ import annotations

import keras
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
    query, key, value, output_gate, input_gate, forget_gate = cell.projections(sequences)
    heads, width = cell.heads, cell.head_units
    batch, dtype = tf.shape(sequences)[0], sequences.dtype
    memory, normaliser, stabiliser = (tf.cast(state, dtype) for state in initial_state)
    start = (
        tf.reshape(memory, [batch, heads, width, width]),
        tf.reshape(normaliser, [batch, heads, width]),
        stabiliser,
    )
    log_forget = tf.math.log_sigmoid(forget_gate)
    if keep is not None:
        log_forget = tf.where(keep, log_forget, tf.zeros_like(log_forget))
        input_gate = tf.where(keep, input_gate, nothing_like(input_gate))
    readout, (memory, normaliser, stabiliser) = mlstm_chunkwise(
        query, key, value, input_gate, log_forget, start, cell.chunk_size
    )
    units = cell.units
    outputs = tf.sigmoid(output_gate) * tf.reshape(readout, [batch, -1, units])
    final = [
        tf.reshape(memory, [batch, heads * width * width]),
        tf.reshape(normaliser, [batch, units]),
        stabiliser,
    ]
    return loop_results(layer, outputs, keep, final)


def _chunked(x, chunks, chunk_size):
    """[B, T, heads, ...] → [B, heads, chunks, L, ...]."""
    shape = tf.shape(x)
    x = tf.reshape(x, tf.concat([[shape[0], chunks, chunk_size], shape[2:]], 0))
    rank = len(x.shape)
    return tf.transpose(x, [0, 3, 1, 2, *range(4, rank)])


def mlstm_chunkwise(query, key, value, input_gate, log_forget, start, chunk_size):
    """Every step's h̃ [B, T, heads, d] and the final (C, n, m), from q, k, v [B, T, heads, d]
    (k already scaled), ĩ and log f [B, T, heads], and the state the sequence starts in:
    C [B, heads, d, d] (v by k), n [B, heads, d], m [B, heads]."""
    steps = tf.shape(query)[1]
    padding = (-steps) % chunk_size
    chunks = (steps + padding) // chunk_size

    def pad(x, value=0.0):
        widths = [[0, 0], [0, padding]] + [[0, 0]] * (len(x.shape) - 2)
        return tf.pad(x, widths, constant_values=value)

    q, k, v = (_chunked(pad(x), chunks, chunk_size) for x in (query, key, value))
    log_f = _chunked(pad(log_forget), chunks, chunk_size)  # [B, heads, chunks, L]
    log_i = _chunked(pad(input_gate, NOTHING_WRITTEN), chunks, chunk_size)

    # F_t within each chunk (inclusive), and the log weight of step j in the chunk's end state.
    decay = tf.cumsum(log_f, axis=-1)
    total = decay[..., -1]
    to_end = total[..., None] - decay + log_i
    local_max = tf.reduce_max(to_end, axis=-1)
    weights = tf.exp(to_end - local_max[..., None])
    written = tf.einsum("bhcl,bhclv,bhclk->bhcvk", weights, v, k)
    keys_written = tf.einsum("bhcl,bhclk->bhck", weights, k)

    def next_chunk(state, chunk):
        memory, normaliser, stabiliser = state
        kept, written_max, chunk_memory, chunk_keys = chunk
        new = tf.maximum(kept + stabiliser, written_max)
        old_scale, new_scale = tf.exp(kept + stabiliser - new), tf.exp(written_max - new)
        return (
            old_scale[..., None, None] * memory + new_scale[..., None, None] * chunk_memory,
            old_scale[..., None] * normaliser + new_scale[..., None] * chunk_keys,
            new,
        )

    def chunk_major(x):
        return tf.transpose(x, [2, 0, 1, *range(3, len(x.shape))])

    ends = tf.scan(
        next_chunk,
        tuple(chunk_major(x) for x in (total, local_max, written, keys_written)),
        initializer=start,
    )
    # The state each chunk starts from: the initial one, then each chunk's end but the last.
    memory, normaliser, stabiliser = (
        tf.transpose(
            tf.concat([first[None], every[:-1]], 0), [1, 2, 0, *range(3, len(every.shape))]
        )
        for first, every in zip(start, ends)
    )
    final = tuple(every[-1] for every in ends)

    # Within each chunk: the causal decay matrix and the carried-in memory, one stabiliser.
    log_decay = decay[..., :, None] - decay[..., None, :] + log_i[..., None, :]
    causal = tf.linalg.band_part(tf.ones([chunk_size, chunk_size], tf.bool), -1, 0)
    log_decay = tf.where(causal, log_decay, nothing_like(log_decay))
    carried = decay + stabiliser[..., None]  # log of the start memory's weight at step t
    row_stabiliser = tf.maximum(tf.reduce_max(log_decay, axis=-1), carried)
    scores = tf.matmul(q, k, transpose_b=True) * tf.exp(log_decay - row_stabiliser[..., None])
    carried_scale = tf.exp(carried - row_stabiliser)
    numerator = tf.matmul(scores, v) + carried_scale[..., None] * tf.einsum(
        "bhcvk,bhclk->bhclv", memory, q
    )
    overlap = tf.reduce_sum(scores, axis=-1) + carried_scale * tf.einsum(
        "bhck,bhclk->bhcl", normaliser, q
    )
    denominator = tf.maximum(tf.abs(overlap), tf.exp(-row_stabiliser))
    readout = numerator / denominator[..., None]  # [B, heads, chunks, L, d]
    batch, heads, width = tf.shape(q)[0], tf.shape(q)[1], tf.shape(q)[-1]
    readout = tf.reshape(tf.transpose(readout, [0, 2, 3, 1, 4]), [batch, -1, heads, width])
    return readout[:, :steps], final
