"""Chrono initialisation (Tallec & Ollivier 2018, "Can recurrent neural networks warp time?").

A gated cell forgets at a rate its gate biases set. With the usual biases (0, or 1 for the
LSTM's forget gate) every unit forgets within a few steps, so a dependency hundreds of
steps back is out of reach at the start of training, and the copy task's LSTM sits at the
memoryless baseline. Chrono initialisation spreads the units' memory times over the range
the task needs: forget-gate bias b_f = log(u), u ~ U[1, T_max - 1], and input-gate bias
b_i = -b_f, so a unit's state decays with a time constant of about u steps.

For Keras's GRU, h_t = z_t ⊙ h_{t-1} + (1 - z_t) ⊙ h̃_t: the update gate z is the forget
gate, and gets b_z = log(u); its candidate weighs by (1 - z) already. Only the input
bias of a GRU with `reset_after` (shape (2, 3·units)) is set; the recurrent one stays 0.
"""

from __future__ import annotations

import keras
from keras import ops

# Each Keras cell's bias: its gates in order, and which the chrono biases go to.
GATES = {"lstm": ("input", "forget", "cell", "output"), "gru": ("update", "reset", "candidate")}


@keras.saving.register_keras_serializable(package="rnnlab")
class ChronoBias(keras.initializers.Initializer):
    """The bias initializer of a Keras LSTMCell or GRUCell: `bias_initializer` in the cell's
    config (conf/cell/lstm_chrono.yaml). `max_steps` is T_max, the longest span the task
    asks the cell to remember (the copy task's delay, the adding problem's length)."""

    def __init__(self, max_steps: int, gates: str = "lstm", seed: int | None = None) -> None:
        if gates not in GATES:
            raise ValueError(f"gates must be one of {', '.join(GATES)}, got {gates!r}")
        if max_steps < 3:
            raise ValueError(
                f"max_steps must be at least 3 (u ~ U[1, max_steps - 1]), got {max_steps}"
            )
        self.max_steps = int(max_steps)
        self.gates = gates
        self.seed = seed

    def __call__(self, shape, dtype=None):
        width = shape[-1] // len(GATES[self.gates])
        dtype = dtype or "float32"
        spans = keras.random.uniform(
            (width,), 1.0, self.max_steps - 1.0, dtype=dtype, seed=self.seed
        )
        forget = ops.log(spans)
        zeros = ops.zeros((width,), dtype=dtype)
        if self.gates == "lstm":
            row = ops.concatenate([-forget, forget, zeros, zeros])
        else:
            row = ops.concatenate([forget, zeros, zeros])
        if len(shape) == 2:  # a GRU with reset_after: input bias, then recurrent bias
            row = ops.stack([row, ops.zeros_like(row)])
        return row

    def get_config(self) -> dict:
        return {"max_steps": self.max_steps, "gates": self.gates, "seed": self.seed}
