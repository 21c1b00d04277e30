"""Turn the `cell` and `model` config groups into a stack of Keras RNN layers.

Cells are built from `_target_`, so any Keras RNN cell class (a user's own included) is
wrapped the same way as the built-in ones: one `ProbedRNN` (a `keras.layers.RNN` the
gradient probe can look inside) per stacked layer, optionally bidirectional, optionally
after a short causal convolution (`model.short_conv`). A cell whose settings depend on its
depth (HGRN's forget-gate lower bound) has a `place_in_stack(index, layers)` method, which
the stack calls before the layer is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
from hydra.utils import instantiate
from keras import layers, ops
from omegaconf import DictConfig

from rnnlab.config import ConfigError
from rnnlab.recurrence.layer import ProbedRNN


def build_cell(cell_cfg: DictConfig, index: int = 0, layers: int = 1) -> keras.Layer:
    """A fresh cell for layer `index` (from 0) of a stack of `layers`."""
    cell = instantiate(cell_cfg)
    if not hasattr(cell, "state_size"):
        raise ConfigError(
            f"cell._target_ {cell_cfg._target_} is not a Keras RNN cell: it has no state_size"
        )
    place_in_stack = getattr(cell, "place_in_stack", None)
    if place_in_stack is not None:
        place_in_stack(index, layers)
    return cell


@keras.saving.register_keras_serializable(package="rnnlab")
class ShortConv(layers.Layer):
    """Each feature mixed with its own last `width` steps: a causal depthwise convolution.

    Mamba, Griffin and xLSTM put one (width 4) before their recurrences, and recall needs
    it there: a cell that writes what it reads from x_t alone (S6, the mLSTM's keys and
    values) cannot bind a value to the key one step before it, while after the convolution
    x_t carries both. Steps a mask marks as padding count as zeros, and the mask passes
    on to the recurrence. Initialised as PyTorch's Conv1d, which those papers' code uses:
    uniform in ±1/√width.
    """

    def __init__(self, width: int, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.supports_masking = True

    def build(self, input_shape) -> None:
        bound = 1 / math.sqrt(self.width)
        self.kernel = self.add_weight(
            shape=(self.width, input_shape[-1]),
            initializer=keras.initializers.RandomUniform(-bound, bound),
            name="kernel",
        )
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")

    def call(self, inputs, mask=None):
        if mask is not None:
            inputs = inputs * ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        steps = ops.shape(inputs)[1]
        padded = ops.pad(inputs, [[0, 0], [self.width - 1, 0], [0, 0]])
        kernel = ops.cast(self.kernel, inputs.dtype)
        mixed = ops.cast(self.bias, inputs.dtype)
        for lag in range(self.width):  # kernel[width - 1] weighs x_t, kernel[0] x_(t - width + 1)
            mixed = mixed + padded[:, lag : lag + steps, :] * kernel[lag]
        return mixed

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self) -> dict:
        return {**super().get_config(), "width": self.width}


# Applies the configured recurrent layers to a sequence: stack(sequence, return_sequences=...).
RecurrentStack = Callable[..., keras.KerasTensor]


def recurrent_stack(
    cell_cfg: DictConfig,
    model_cfg: DictConfig,
    return_sequences: bool = False,
    prefix: str = "recurrent",
    bidirectional: bool | None = None,
) -> RecurrentStack:
    """A function applying `model.layers` recurrent layers, each with a fresh cell.

    The last layer returns its whole output sequence if `return_sequences` (here or in the
    call, for per-step tasks), else only its final output. Layers are named
    `<prefix>_<index>`; `bidirectional` defaults to `model.bidirectional`.
    """
    sequences_by_default = return_sequences
    both_ways = model_cfg.bidirectional if bidirectional is None else bidirectional

    def apply(
        sequence: keras.KerasTensor, return_sequences: bool = sequences_by_default
    ) -> keras.KerasTensor:
        for index in range(model_cfg.layers):
            last = index == model_cfg.layers - 1
            if model_cfg.get("short_conv"):
                sequence = ShortConv(model_cfg.short_conv, name=f"{prefix}_conv_{index}")(sequence)
            recurrent = ProbedRNN(
                build_cell(cell_cfg, index, model_cfg.layers),
                return_sequences=return_sequences or not last,
                fused=model_cfg.fused,
                unroll=model_cfg.unroll,
                name=f"{prefix}_{index}",
            )
            if both_ways:
                recurrent = layers.Bidirectional(recurrent, name=f"{prefix}_bidirectional_{index}")
            sequence = recurrent(sequence)
            if model_cfg.dropout:
                sequence = layers.Dropout(model_cfg.dropout, name=f"{prefix}_dropout_{index}")(
                    sequence
                )
        return sequence

    return apply


def decoder_stack(cell_cfg: DictConfig, model_cfg: DictConfig) -> RecurrentStack:
    """The decoder of an encoder–decoder model: full sequences out, under its own names.

    It reads its inputs left to right only (a decoder must not see the words it is to
    produce), and the gradient probe sees its layers like any other.
    """
    return recurrent_stack(
        cell_cfg, model_cfg, return_sequences=True, prefix="decoder", bidirectional=False
    )
