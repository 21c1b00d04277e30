"""Measure g_t = ||dL/dh_t|| at every time step: the vanishing-gradient picture.

The gradient that reaches h_t through the recurrence is a total derivative, which no layer
output exposes. So every rnnlab recurrent layer is a `ProbedRNN`: while a probe runs, it adds
a zero perturbation e_t to each state after step t, and dL/de_t is exactly dL/dh_t.
For the LSTM's cell state the same perturbation gives dL/dc_t along the memory path
(c_t -> c_{t+1} -> ...), the constant-error carousel; the same-step path into h_t is not in
it. Training never takes this path and pays nothing for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from rnnlab.config import ConfigError
from rnnlab.recurrence.layer import ProbedRNN, ProbeSession, recurrent_layers

FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def select_layers(model: keras.Model, which) -> list[ProbedRNN]:
    """`last`, `all`, or a list of layer names; an unknown name lists the known ones."""
    available = recurrent_layers(model)
    if which == "last":
        return available[-1:]
    if which == "all":
        return available
    names = [which] if isinstance(which, str) else list(which)
    by_name = {layer.name: layer for layer in available}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ConfigError(
            f"probe.layers names no recurrent layer {', '.join(unknown)}; "
            f"the model has: {', '.join(by_name) or 'none'} (or use last, all)"
        )
    return [by_name[name] for name in names]


def state_names(layer: ProbedRNN) -> list[str]:
    """h for the hidden state; c for the LSTM's cell state; state<i> for anything else."""
    sizes = layer.cell.state_size
    count = len(sizes) if isinstance(sizes, list | tuple) else 1
    if isinstance(layer.cell, layers.LSTMCell):
        return ["h", "c"]
    return ["h", *(f"state{index}" for index in range(1, count))]


@dataclass
class ProbeResult:
    """Norms over the probe batch: per layer and state, one value per time step."""

    step_norms: dict[str, dict[str, np.ndarray]]
    weight_norms: dict[str, float]  # per layer with weights, and "global"
    loss: float


class GradientProbe:
    """Computes ProbeResult for a fixed batch; traced once, then cheap to repeat."""

    def __init__(self, model: keras.Model, loss, which="last") -> None:
        self.model = model
        self.loss_fn = keras.losses.get(loss)
        self.layers = select_layers(model, which)
        # A function of this probe's own: tf.function counts retraces per Python function.
        self._measure = tf.function(lambda inputs, targets: self._gradients(inputs, targets))

    def _forward_loss(self, inputs, targets, session: ProbeSession):
        for layer in self.layers:
            layer.probe_session = session
        try:
            predictions = self.model(inputs, training=False)
        finally:
            for layer in self.layers:
                layer.probe_session = None
        if len(targets.shape) == len(predictions.shape) - 1 and predictions.shape[-1] == 1:
            targets = ops.expand_dims(targets, -1)  # as `fit` does for a single output unit
        return ops.mean(self.loss_fn(targets, predictions))

    def _gradients(self, inputs, targets):
        session = ProbeSession()
        with tf.GradientTape() as tape:
            session.tape = tape
            loss = self._forward_loss(inputs, targets, session)
        variables = self.model.trainable_variables
        perturbations = {name: session.perturbations[name] for name in self._names()}
        state_grads, weight_grads = tape.gradient(loss, (perturbations, variables))
        step_norms = {
            name: [ops.sqrt(ops.sum(ops.square(grad), axis=(0, 2))) for grad in grads]
            for name, grads in state_grads.items()
        }
        return loss, step_norms, [ops.sqrt(ops.sum(ops.square(grad))) for grad in weight_grads]

    def _names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def loss_with_offsets(self, inputs, targets, offsets: dict[str, list]) -> float:
        """The loss with given state perturbations: the finite-difference check uses it."""
        return float(self._forward_loss(inputs, targets, ProbeSession(offsets=offsets)))

    def measure(self, inputs, targets) -> ProbeResult:
        loss, step_norms, weight_norms = self._measure(inputs, targets)
        per_layer: dict[str, float] = {}
        for variable, norm in zip(self.model.trainable_variables, weight_norms):
            owner = variable.path.split("/")[0]
            per_layer[owner] = per_layer.get(owner, 0.0) + float(norm) ** 2
        norms = {owner: math.sqrt(total) for owner, total in per_layer.items()}
        norms["global"] = math.sqrt(sum(total for total in per_layer.values()))
        named = {}
        for layer in self.layers:
            # t counts steps in the order the layer reads them, backwards layers included.
            order = slice(None, None, -1) if layer.go_backwards else slice(None)
            curves = (np.asarray(norms)[order] for norms in step_norms[layer.name])
            named[layer.name] = dict(zip(state_names(layer), curves))
        return ProbeResult(step_norms=named, weight_norms=norms, loss=float(loss))


def decay_statistics(norms: np.ndarray) -> dict[str, float]:
    """log10(g_1 / g_T) and the half-life: steps back from T until g_t < g_T / 2.

    T is the last step the gradient reaches (padding after a masked sequence gets none).
    A half-life of T means the gradient never halves on its way back. A g_1 that underflowed
    to 0 counts as float32's smallest normal number, about 1e-38.
    """
    reached = np.flatnonzero(norms > 0)
    if reached.size == 0:
        return {"log10_ratio": float("-inf"), "half_life": 0.0}
    last = reached[-1]
    final = norms[last]
    # A gradient below float32's range has vanished: count it as the smallest float32.
    ratio = math.log10(max(norms[0], FLOAT32_TINY) / final)
    below = np.flatnonzero(norms[: last + 1][::-1] < final / 2)
    return {"log10_ratio": ratio, "half_life": float(below[0] if below.size else last + 1)}
