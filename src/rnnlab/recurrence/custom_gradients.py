"""What the recurrence's hand-written gradients share, and the cleanup TensorFlow needs after them.

Every fast route (the graph loop, the native fused cells, the native scans) wraps its work
in `tf.custom_gradient`, so that its backward pass is the one written out rather than
TensorFlow's differentiation of a loop. The helpers here are the parts of those backward
passes that the routes have in common. `forget_custom_gradients` is the price of the
wrapper: TensorFlow keeps every traced custom gradient for the life of the process.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops


def zeros_for_none(gradient, like):
    """The upstream gradient, or zeros shaped `like` where TensorFlow passed None (an
    output nobody reads)."""
    return tf.zeros_like(like) if gradient is None else gradient


def step_starts(initial, history):
    """The state each step started from: the initial one, then every step's but the last."""
    return tf.concat([tf.expand_dims(initial, 0), history[:-1]], axis=0)


def kernel_gradient(previous, flat_inner):
    """Sum over steps and rows of h_{t-1}ᵀ · d(h_{t-1} @ kernel): one large matmul."""
    flat_previous = tf.reshape(previous, (-1, previous.shape[-1]))
    return tf.matmul(flat_previous, flat_inner, transpose_a=True)


def sequence_and_final(outputs, all_steps: bool):
    """(states of every step or None, [final states]) from what a custom-gradient function
    returned: the states of every step first, where asked for."""
    if not all_steps:
        return None, list(outputs)
    return outputs[0], list(outputs[1:])


def forget_custom_gradients() -> int:
    """Drop the gradient functions `tf.custom_gradient` registered for earlier runs' graphs.

    Inside a `tf.function` (every Keras train step) each `tf.custom_gradient` call registers
    its gradient in TensorFlow's global registry under a new name and never removes it; the
    closure holds the whole traced graph. A sweep worker kept every model it ever trained:
    11,000 objects and 7.6 MB more a run, and its trials 40% slower after 250 of them
    (docs/results/benchmarks.md, the 1,000-trial study on 4 workers). `training.run` calls
    this before it builds a model, when the graphs of earlier runs are no longer used.
    TensorFlow offers no public way: this edits its private registry, and a test checks
    that it still works.
    """
    registry = tf_ops._gradient_registry._registry
    stale = [name for name in registry if name.startswith("CustomGradient-")]
    for name in stale:
        del registry[name]
    return len(stale)
