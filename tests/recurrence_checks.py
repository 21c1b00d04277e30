"""What the recurrence tests share: the same loss through two layers, and a call counter."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from rnnlab.recurrence import fused


def outputs_and_gradients(layer, sequences, mask=None, training=True):
    """Every output and state, and the gradients of a loss of all of them."""
    with tf.GradientTape() as tape:
        tape.watch(sequences)
        outputs = layer(sequences, mask=mask, training=training)
        outputs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
        # A fixed, uneven weighting, so every output element's gradient path is checked.
        loss = sum(tf.reduce_sum(o * tf.sin(tf.cumsum(tf.ones_like(o)))) for o in outputs)
    gradients = tape.gradient(loss, [sequences, *layer.trainable_variables])
    return [np.asarray(t) for t in [*outputs, *gradients]]


def count_native_calls(monkeypatch) -> list:
    """The calls the native path receives from now on: a test cannot silently skip it."""
    calls = []
    original = fused.native_recurrence
    monkeypatch.setattr(
        fused,
        "native_recurrence",
        lambda *args, **kw: calls.append(1) or original(*args, **kw),
    )
    return calls
