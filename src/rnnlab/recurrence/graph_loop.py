"""The fused recurrence in TensorFlow's own graph: the route where the native ops are not.

The native ops (`native_calls`) run float32 sequences; bfloat16 and float64, unrolled
layers, and machines where the ops did not build come here. The time loop is a
`tf.while_loop` (or a Python loop when unrolled), and its gradient is the cell's
hand-written backward step (`cell_kinds`) in a second loop, not TensorFlow's
differentiation of the first: what does not depend on the incoming gradient is computed
for all steps at once before the backward loop, and the kernel's gradient is one large
matmul after it.
"""

from __future__ import annotations

import tensorflow as tf

from rnnlab.recurrence.cell_kinds import CellKind
from rnnlab.recurrence.custom_gradients import (
    kernel_gradient,
    sequence_and_final,
    step_starts,
    zeros_for_none,
)


def graph_recurrence(
    kind: CellKind, projected, kernel, biases, initial_states, keep, all_steps=True, unroll=False
):
    """Runs the cell over time-major `projected` [T, B, gates·units] in TensorFlow's graph.

    Arguments and results as `fused.recurrence`'s.
    """
    steps = projected.shape[0]
    if steps is None:  # a length known only when the batch arrives: no unrolling
        steps, unroll = tf.shape(projected)[0], False
    loop = _python_loop if unroll else _while_loop

    @tf.custom_gradient
    def run(projected, kernel, *rest):
        bias, initial = (rest[0] if biases else None), rest[len(biases) :]

        def forward(t, states):
            new, records = kind.step(projected[t], states, kernel, bias)
            if keep is not None:
                new = _where(keep[t], new, states)
            return new, (*new, *records)

        final, stacked = loop(forward, steps, tuple(initial), reverse=False)
        history, records = stacked[: kind.states], stacked[kind.states :]

        def gradient(*upstream):
            d_hidden = upstream[0] if all_steps else None
            d_final = upstream[1:] if all_steps else upstream
            # The states each step started from: for the derivatives and the kernel's gradient.
            previous = tuple(map(step_starts, initial, history))
            factors, extra = kind.prepare(projected, previous, history, records)
            kernel_parts = tf.split(tf.transpose(kernel), kind.gates, axis=0)

            def backward(t, carried):
                gradients = list(carried)
                if d_hidden is not None:
                    gradients[0] = gradients[0] + d_hidden[t]
                if keep is not None:
                    kept = [g * keep[t] for g in gradients]
                    held = tuple(g - k for g, k in zip(gradients, kept))
                    gradients = kept
                d_previous, step_records = kind.backward(
                    tuple(f[t] for f in factors), gradients, kernel_parts
                )
                if keep is not None:
                    d_previous = tuple(d + h for d, h in zip(d_previous, held))
                return d_previous, step_records

            d_final = tuple(map(zeros_for_none, d_final, initial))
            d_initial, backward_records = loop(backward, steps, d_final, reverse=True)
            d_projected, d_inner = kind.finish(backward_records, extra)
            flat_inner = tf.reshape(d_inner, (-1, d_inner.shape[-1]))
            d_kernel = kernel_gradient(previous[0], flat_inner)
            d_biases = tuple(tf.reduce_sum(flat_inner, axis=0) for _ in biases)
            return (d_projected, d_kernel, *d_biases, *d_initial)

        return ((history[0], *final) if all_steps else final), gradient

    return sequence_and_final(run(projected, kernel, *biases, *initial_states), all_steps)


def _where(keep, new, old):
    """`new` where keep is 1, `old` where it is 0 (a masked step holds its states)."""
    return tuple(o + keep * (n - o) for n, o in zip(new, old))


def _python_loop(body, steps, carried, reverse):
    """`body(t, carried) -> (carried, per_step)` over t, stacking per_step along time."""
    collected = [None] * steps
    for t in reversed(range(steps)) if reverse else range(steps):
        carried, collected[t] = body(t, carried)
    return carried, tuple(tf.stack(parts) for parts in zip(*collected))


def _while_loop(body, steps, carried, reverse):
    """As `_python_loop`, in one tf.while_loop; the first step runs before it, for shapes."""
    first = steps - 1 if reverse else 0
    carried, per_step = body(first, carried)
    arrays = tuple(
        tf.TensorArray(p.dtype, size=steps, element_shape=p.shape).write(first, p) for p in per_step
    )

    def loop_body(i, carried, arrays):
        t = steps - 1 - i if reverse else i
        carried, per_step = body(t, carried)
        return i + 1, carried, tuple(a.write(t, p) for a, p in zip(arrays, per_step))

    _, carried, arrays = tf.while_loop(
        lambda i, *_: i < steps, loop_body, (tf.constant(1), carried, arrays)
    )
    return carried, tuple(a.stack() for a in arrays)
