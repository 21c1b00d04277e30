"""What the recurrence tests share: the same loss through two layers, random weights, gradients
against finite differences, and a call counter."""

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
    calls: list[int] = []
    for name in ("native_recurrence", "native_slstm_recurrence"):  # Keras's cells, the sLSTM

        def counted(*args, original=getattr(fused, name), **kw):
            calls.append(1)
            return original(*args, **kw)

        monkeypatch.setattr(fused, name, counted)
    return calls


def randomize(cell, seed=0, scale=0.7):
    """Random non-zero values in every weight (biases too), so no term of an equation hides."""
    rng = np.random.default_rng(seed)
    for variable in cell.weights:
        variable.assign(rng.normal(size=variable.shape) * scale)


def assert_gradients_match_central_differences(loss, variables, epsilon=1e-6):
    """The tape's gradient of `loss()` (float64) against (f(x + e) - f(x - e)) / 2e, entry by
    entry of every variable."""
    with tf.GradientTape() as tape:
        value = loss()
    analytic = tape.gradient(value, variables)
    for variable, gradient in zip(variables, analytic):
        original = variable.numpy()
        numeric = np.zeros_like(original)
        for index in np.ndindex(original.shape):
            for sign in (1, -1):
                shifted = original.copy()
                shifted[index] += sign * epsilon
                variable.assign(shifted)
                numeric[index] += sign * loss().numpy() / (2 * epsilon)
        variable.assign(original)
        np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-8, err_msg=variable.name)
