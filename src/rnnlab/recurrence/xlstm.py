"""xLSTM's two cells (Beck et al. 2024): the LSTM with exponential gating, in two memories.

Both gate their input with i = exp(ĩ), which lets a new input outweigh everything stored so
far (a sigmoid input gate cannot), and both keep a normaliser n_t beside the memory so that
the readout is a weighted average whatever the gates' scale. exp overflows, so each keeps a
stabiliser m_t, the running log of the largest gate product: the memory and normaliser are
stored divided by exp(m_t), which changes no output (the ratio is unchanged) but keeps every
exp's argument ≤ 0. The forget gate is σ(f̃), used in log space as log σ(f̃), as in the
paper's experiments and the authors' reference code (NX-AI/xlstm).

- `SLSTMCell`: a scalar memory per unit, mixed across time by recurrent weights that are
  block-diagonal by heads. Its gates read h_{t-1}, so it has no parallel form: `ProbedRNN`
  runs a whole sequence in rnnlab's native ops (`fused`, native/fused_cells.cc), the step
  below restated in C++ with its derivative, else step by step through Keras's loop.
- `MLSTMCell`: a matrix memory per head, C_t = f C_{t-1} + i v kᵀ, read by a query. Its
  gates read x_t only, so a whole sequence also has a chunkwise-parallel form
  (`rnnlab.recurrence.chunkwise`), which `ProbedRNN` uses when it is given the sequence.

The outputs do not depend on m_0 while the memory and normaliser start at zero (Keras's
initial state), so m starts at 0 too. The blocks around the cells in the paper (layer
norms, up-projections, the short convolution) are not part of the cells; stacking and
dropout come from `model.*` like every other cell's.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import initializers, layers, ops
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell


def _head_width(units: int, heads: int) -> int:
    if units <= 0:
        raise ValueError(f"cell.units must be a positive integer, got {units}")
    if heads <= 0 or units % heads:
        raise ValueError(f"cell.units ({units}) must be a multiple of cell.heads ({heads})")
    return units // heads


def stabilised_gates(input_gate, forget_gate, previous_stabiliser):
    """(i', f', m_t) from the pre-activations ĩ, f̃ and m_{t-1}: m_t = max(log σ(f̃) + m_{t-1},
    ĩ), i' = exp(ĩ - m_t), f' = exp(log σ(f̃) + m_{t-1} - m_t), so that both are ≤ 1."""
    log_forget = ops.log_sigmoid(forget_gate) + previous_stabiliser
    stabiliser = ops.maximum(log_forget, input_gate)
    return ops.exp(input_gate - stabiliser), ops.exp(log_forget - stabiliser), stabiliser


class _XLSTMCell(DropoutRNNCell, layers.Layer):
    """What both cells share: width by heads, Keras's input dropout (one mask per
    sequence), and their config."""

    def __init__(
        self,
        units: int,
        heads: int = 4,
        kernel_initializer="glorot_uniform",
        dropout: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.head_units = _head_width(units, heads)
        self.units, self.heads = units, heads
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.dropout = min(1.0, max(0.0, dropout))
        self.recurrent_dropout = 0.0  # Keras's loop asks; xLSTM drops inputs only
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.output_size = units

    def dropped(self, inputs, training):
        if training and self.dropout:
            return inputs * self.get_dropout_mask(inputs)
        return inputs

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "heads": self.heads,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "dropout": self.dropout,
            "seed": self.seed,
        }


def powerlaw_forget_bias(head_units: int) -> np.ndarray:
    """The reference's forget-gate biases for a single block ("powerlaw_blockdependent" at
    block 0): from 5 down to -7 across a head, b_j = 5 - 12 (j / (d - 1))^0.3, so a head's
    units start with memories from about e^5 ≈ 150 steps down to one step."""
    fraction = np.linspace(0.0, 1.0, head_units) if head_units > 1 else np.zeros(1)
    return 5.0 - 12.0 * fraction**0.3


@keras.saving.register_keras_serializable(package="rnnlab")
class SLSTMCell(_XLSTMCell):
    """sLSTM: a scalar memory with exponential input gate, normaliser and stabiliser.

    ĩ, f̃, z̃, õ = W x_t + R h_{t-1} + b, R block-diagonal by heads (each head's units see
    only their own head's past);
    m_t = max(log σ(f̃) + m_{t-1}, ĩ), i' = exp(ĩ - m_t), f' = exp(log σ(f̃) + m_{t-1} - m_t),
    c_t = f' c_{t-1} + i' tanh(z̃), n_t = f' n_{t-1} + i', h_t = σ(õ) c_t / n_t.
    States [h, c, n, m]. The reference's initialisation: R zero, biases zero but the forget
    gate's (`powerlaw_forget_bias`).
    """

    def __init__(self, units: int, recurrent_initializer="zeros", **kwargs) -> None:
        super().__init__(units, **kwargs)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.state_size = [units] * 4  # h, c, n, m

    def build(self, input_shape) -> None:
        heads, width = self.heads, self.head_units
        self.kernel = self.add_weight(  # [i | f | z | o], each `units` wide
            shape=(input_shape[-1], 4 * self.units),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.recurrent_kernel = self.add_weight(  # per head: its h to its 4 gates
            shape=(heads, width, 4 * width),
            initializer=self.recurrent_initializer,
            name="recurrent_kernel",
        )
        bias = np.zeros((4, self.units))
        bias[1] = np.tile(powerlaw_forget_bias(width), heads)
        self.bias = self.add_weight(
            shape=(4 * self.units,),
            initializer=initializers.Constant(bias.reshape(-1)),
            name="bias",
        )

    def recurrent_term(self, hidden):
        """R h, block-diagonal: [B, units] → [B, 4·units] in the kernel's gate order."""
        heads, width = self.heads, self.head_units
        per_head = ops.reshape(hidden, (-1, heads, 1, width))
        mixed = ops.matmul(per_head, self.recurrent_kernel)  # [B, heads, 1, 4·width]
        gates = ops.reshape(mixed, (-1, heads, 4, width))
        return ops.reshape(ops.transpose(gates, (0, 2, 1, 3)), (-1, 4 * self.units))

    def call(self, inputs, states, training=False):
        hidden, cell, normaliser, stabiliser = states
        inputs = self.dropped(inputs, training)
        pre = ops.matmul(inputs, self.kernel) + self.bias + self.recurrent_term(hidden)
        input_gate, forget_gate, candidate, output_gate = ops.split(pre, 4, axis=-1)
        remember, forget, stabiliser = stabilised_gates(input_gate, forget_gate, stabiliser)
        cell = forget * cell + remember * ops.tanh(candidate)
        normaliser = forget * normaliser + remember
        hidden = ops.sigmoid(output_gate) * cell / normaliser
        return hidden, [hidden, cell, normaliser, stabiliser]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
        }


@keras.saving.register_keras_serializable(package="rnnlab")
class MLSTMCell(_XLSTMCell):
    """mLSTM: a matrix memory per head, written with v kᵀ and read with a query.

    Per head (width d = units / heads): q, k, v, õ = W x_t + b (k scaled by 1/√d), scalar
    gates ĩ, f̃ = w x_t + b; m_t = max(log σ(f̃) + m_{t-1}, ĩ), i', f' as in `stabilised_gates`;
    C_t = f' C_{t-1} + i' v kᵀ, n_t = f' n_{t-1} + i' k,
    h̃_t = C_t q / max(|n_tᵀ q|, exp(-m_t)), h_t = σ(õ) ⊙ h̃_t.
    Keras states are flat: [C (heads·d·d), n (heads·d), m (heads)]; the probe's `h` is C, the
    memory the gradient travels through. No gate reads h_{t-1}, so `ProbedRNN` computes a
    whole sequence in chunks (`chunk_size` steps of matmuls, a recurrence between chunks)
    unless `parallel_chunks` is false. The reference's initialisation: gate weights zero,
    input-gate biases N(0, 0.1²), forget-gate biases evenly from 3 to 6 across heads.
    """

    def __init__(
        self, units: int, chunk_size: int = 32, parallel_chunks: bool = True, **kwargs
    ) -> None:
        super().__init__(units, **kwargs)
        if chunk_size <= 0:
            raise ValueError(f"cell.chunk_size must be a positive integer, got {chunk_size}")
        self.chunk_size = chunk_size
        self.parallel_chunks = parallel_chunks
        width = self.head_units
        self.state_size = [self.heads * width * width, units, self.heads]  # C, n, m

    def build(self, input_shape) -> None:
        heads = self.heads
        self.kernel = self.add_weight(  # [q | k | v | o], each `units` wide
            shape=(input_shape[-1], 4 * self.units),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.bias = self.add_weight(shape=(4 * self.units,), initializer="zeros", name="bias")
        self.gate_kernel = self.add_weight(  # [ĩ | f̃], one scalar per head each
            shape=(input_shape[-1], 2 * heads), initializer="zeros", name="gate_kernel"
        )
        draws = ops.convert_to_numpy(
            keras.random.normal((heads,), stddev=0.1, seed=self.seed_generator)
        )
        forget = np.linspace(3.0, 6.0, heads) if heads > 1 else np.full(1, 3.0)
        self.gate_bias = self.add_weight(
            shape=(2 * heads,),
            initializer=initializers.Constant(np.concatenate([draws, forget])),
            name="gate_bias",
        )

    def projections(self, inputs):
        """(q, k, v, õ, ĩ, f̃) of inputs [..., features]: q, k, v as [..., heads, d] (k scaled
        by 1/√d), õ as [..., units], the gates as [..., heads]. Any leading axes."""
        heads, width = self.heads, self.head_units
        query, key, value, output_gate = ops.split(
            ops.matmul(inputs, self.kernel) + self.bias, 4, axis=-1
        )
        leading = tuple(ops.shape(inputs)[:-1])

        def by_head(x):
            return ops.reshape(x, (*leading, heads, width))

        gates = ops.matmul(inputs, self.gate_kernel) + self.gate_bias
        input_gate, forget_gate = ops.split(gates, 2, axis=-1)
        key = by_head(key) / math.sqrt(width)
        return by_head(query), key, by_head(value), output_gate, input_gate, forget_gate

    def call(self, inputs, states, training=False):
        heads, width = self.heads, self.head_units
        memory, normaliser, stabiliser = states
        query, key, value, output_gate, input_gate, forget_gate = self.projections(
            self.dropped(inputs, training)
        )
        remember, forget, stabiliser = stabilised_gates(input_gate, forget_gate, stabiliser)
        memory = ops.reshape(memory, (-1, heads, width, width))  # [B, heads, d (v), d (k)]
        normaliser = ops.reshape(normaliser, (-1, heads, width))
        memory = forget[..., None, None] * memory + remember[..., None, None] * (
            value[..., :, None] * key[..., None, :]
        )
        normaliser = forget[..., None] * normaliser + remember[..., None] * key
        numerator = ops.sum(memory * query[..., None, :], axis=-1)  # C q: [B, heads, d]
        overlap = ops.abs(ops.sum(normaliser * query, axis=-1))  # |nᵀ q|: [B, heads]
        denominator = ops.maximum(overlap, ops.exp(-stabiliser))
        readout = ops.reshape(numerator / denominator[..., None], (-1, self.units))
        hidden = ops.sigmoid(output_gate) * readout
        flat_memory = ops.reshape(memory, (-1, heads * width * width))
        return hidden, [flat_memory, ops.reshape(normaliser, (-1, self.units)), stabiliser]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "chunk_size": self.chunk_size,
            "parallel_chunks": self.parallel_chunks,
        }
