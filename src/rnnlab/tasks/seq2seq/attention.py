"""Attention of a decoder's outputs over the encoder's: Luong's attentional state, with
Luong's multiplicative or Bahdanau's additive score.

It sits after the decoder's recurrence, not inside it, so that the recurrence stays the
plain cell under comparison, on its fast path.
"""

from __future__ import annotations

import keras
from keras import layers

from rnnlab.config import ConfigError

ATTENTION_KINDS = ("none", "dot", "additive")


def attend(
    decoded: keras.KerasTensor, memory: keras.KerasTensor | None, kind: str, units: int
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Luong et al. (2015)'s attentional state tanh(W_c [c_t; h_t]) for each decoder output
    h_t, and the attention's weights [batch, target step, source position].

    c_t averages the memory (encoder outputs; padding masked out) weighted by a score of
    h_t against each position: "dot" is Luong's multiplicative score h_t . W k_s, and
    "additive" is Bahdanau et al. (2015)'s v . tanh(W h_t + U k_s). Attention sits after
    the decoder's recurrence, not inside it (Bahdanau feed c_t into the cell), so that the
    recurrence stays the plain cell under comparison, on its fast path; decoding stays
    causal, since h_t sees only tokens up to t.
    """
    if kind not in ATTENTION_KINDS:
        raise ConfigError(f"attention must be one of {', '.join(ATTENTION_KINDS)}; got {kind!r}")
    if memory is None:
        raise ConfigError(f"attention={kind} needs a sequence to attend to; this task has none")
    if kind == "dot":
        query = decoded
        keys = layers.Dense(decoded.shape[-1], use_bias=False, name="attention_keys")(memory)
        score = layers.Attention(name="attention")
    else:
        query = layers.Dense(units, use_bias=False, name="attention_query")(decoded)
        keys = layers.Dense(units, use_bias=False, name="attention_keys")(memory)
        score = layers.AdditiveAttention(name="attention")
    attended, weights = score([query, memory, keys], return_attention_scores=True)
    both = layers.Concatenate(name="attended_and_decoded")([attended, decoded])
    return layers.Dense(units, activation="tanh", name="attentional_state")(both), weights
