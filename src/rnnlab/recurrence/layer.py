"""The recurrent layer every rnnlab model uses: Keras's RNN, open to the gradient probe.

`ProbedRNN` picks how a sequence is computed:
- while a probe runs, Keras's step-by-step loop, with a zero perturbation added to each
  state after every step (rnnlab.training.probe measures dL/dh_t through it);
- for a cell whose recurrence is linear in its state (minGRU, minLSTM, LRU, RG-LRU, HGRN, S6:
  `cells`), the whole sequence at once by a parallel scan (`scan`); IndRNN's elementwise
  step too, by rnnlab's native ops where they built;
- for the mLSTM (`xlstm`), whose gates read the inputs only, the sequence in chunks:
  matmuls within each, a recurrence between them (`chunkwise`);
- on a GPU, for Keras's LSTM and GRU cells, cuDNN's kernels (what keras.layers.LSTM and GRU
  call; `keras.layers.RNN(LSTMCell)` never reaches them), where the cell's settings allow;
- for Keras's SimpleRNN, LSTM and GRU cells, rnnlab's fused recurrence (`fused`); for the
  sLSTM (`xlstm`) too, where rnnlab's native ops run (it has no graph loop);
- for any other cell, Keras's own loop.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import keras
import tensorflow as tf
from keras import layers, ops
from keras.src import backend  # lstm and gru: the cuDNN kernels Keras's layers use

from rnnlab.recurrence.cell_kinds import fused_cell_kind
from rnnlab.recurrence.chunkwise import chunks_in_parallel, chunkwise_layer
from rnnlab.recurrence.fused import fused_rnn, fused_route
from rnnlab.recurrence.masks import input_dropout, padding_mask
from rnnlab.recurrence.scan import scan_layer, scans_in_parallel


@dataclass
class ProbeSession:
    """What probed layers share during one probe: the tape, and the perturbations made."""

    tape: tf.GradientTape | None = None
    offsets: dict[str, list[tf.Tensor]] = field(default_factory=dict)  # given, else zeros
    perturbations: dict[str, list[tf.Tensor]] = field(default_factory=dict)


@functools.cache
def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU (a worker's, through CUDA_VISIBLE_DEVICES)."""
    return bool(tf.config.list_logical_devices("GPU"))


def cudnn_recurrence(layer: layers.RNN, sequences, initial_state, mask, training):
    """The sequence through cuDNN, as keras.layers.LSTM and GRU run it on a GPU; None where
    cuDNN cannot: another cell, recurrent dropout, or settings cuDNN lacks (Keras's backend
    says so with NotImplementedError)."""
    cell = layer.cell
    if type(cell) not in (layers.LSTMCell, layers.GRUCell) or cell.recurrent_dropout:
        return None
    mask = padding_mask(mask)
    sequences = input_dropout(cell, sequences, training)
    shared = {
        "kernel": cell.kernel,
        "recurrent_kernel": cell.recurrent_kernel,
        "bias": cell.bias,
        "activation": cell.activation,
        "recurrent_activation": cell.recurrent_activation,
        "return_sequences": layer.return_sequences,
        "go_backwards": layer.go_backwards,
        "unroll": layer.unroll,
    }
    try:
        if isinstance(cell, layers.LSTMCell):
            last, outputs, states = backend.lstm(
                sequences, initial_state[0], initial_state[1], mask, **shared
            )
        else:
            last, outputs, states = backend.gru(
                sequences, initial_state[0], mask, reset_after=cell.reset_after, **shared
            )
    except NotImplementedError:
        return None
    layer.supports_jit = False  # cuDNN's ops are not XLA's
    return last, outputs, list(states) if isinstance(states, list | tuple) else [states]


@keras.saving.register_keras_serializable(package="rnnlab")
class ProbedRNN(layers.RNN):
    """keras.layers.RNN whose states can be perturbed per step while a probe runs.

    With `fused` (the default), a sequence takes the fastest route its cell has: a parallel
    scan for a linear-recurrence cell, rnnlab's fused recurrence for Keras's own cells and the
    sLSTM (same maths, faster), chunks for the mLSTM. The probe, `fused=False` and any other
    cell take Keras's step loop.
    """

    probe_session: ProbeSession | None = None

    def __init__(self, cell, fused: bool = True, **kwargs) -> None:
        super().__init__(cell, **kwargs)
        self.fused = fused
        # {training: (route, shards)} of the passes traced so far: records.tracking tags them.
        self.recurrence_routes: dict[bool, tuple[str, int]] = {}

    def get_config(self) -> dict:
        return {**super().get_config(), "fused": self.fused}

    def inner_loop(self, sequences, initial_state, mask, training=False):
        session = self.probe_session
        initial_state = (
            list(initial_state) if isinstance(initial_state, list | tuple) else [initial_state]
        )
        if session is None and self.fused and scans_in_parallel(self.cell, sequences.dtype):
            self.recurrence_routes[bool(training)] = ("parallel_scan", 1)
            return scan_layer(self, sequences, initial_state, mask, training)
        if session is None and self.fused and chunks_in_parallel(self.cell):
            self.recurrence_routes[bool(training)] = ("chunkwise", 1)
            return chunkwise_layer(self, sequences, initial_state, mask, training)
        if session is None and self.fused and gpu_visible():
            result = cudnn_recurrence(self, sequences, initial_state, mask, training)
            if result is not None:
                self.recurrence_routes[bool(training)] = ("cudnn", 1)
                return result
        if session is None:
            kind = fused_cell_kind(self.cell, training) if self.fused else None
            if kind is not None and fused_route(kind, sequences.dtype, bool(self.unroll)):
                return fused_rnn(self, kind, sequences, initial_state, mask, training)
            self.recurrence_routes[bool(training)] = ("keras", 1)
            return super().inner_loop(sequences, initial_state, mask, training=training)
        steps = sequences.shape[1]
        perturbations = session.offsets.get(self.name) or [
            ops.zeros((ops.shape(state)[0], steps, state.shape[-1]), dtype=state.dtype)
            for state in initial_state
        ]
        if session.tape is not None:
            for perturbation in perturbations:
                session.tape.watch(perturbation)
        session.perturbations[self.name] = perturbations
        cell_kwargs = {"training": training} if self.cell._call_has_training_arg else {}

        def step(inputs, states):
            output, new_states = self.cell(inputs[0], states, **cell_kwargs)
            if not isinstance(new_states, list | tuple):
                new_states = [new_states]
            shifted = [state + offset for state, offset in zip(new_states, inputs[1:])]
            # Built-in cells output their first state: the output must carry the shift too.
            return (shifted[0] if output is new_states[0] else output), shifted

        return keras.src.backend.rnn(
            step,
            (sequences, *perturbations),
            initial_state,
            go_backwards=self.go_backwards,
            mask=mask,
            unroll=self.unroll,
            input_length=steps,
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )


def recurrent_layers(model: keras.Model) -> list[ProbedRNN]:
    """Every probed recurrent layer, in the order the model applies them."""
    found = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, ProbedRNN):
            found.append(layer)
    return found
