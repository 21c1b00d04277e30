"""Turn the `cell` and `model` config groups into a stack of Keras RNN layers.

Cells are built from `_target_`, so any Keras RNN cell class (a user's own included) is
wrapped the same way as the built-in ones: one `keras.layers.RNN` per stacked layer.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from hydra.utils import instantiate
from keras import layers
from omegaconf import DictConfig

from rnnlab.config import ConfigError


def build_cell(cell_cfg: DictConfig) -> keras.Layer:
    cell = instantiate(cell_cfg)
    if not hasattr(cell, "state_size"):
        raise ConfigError(
            f"cell._target_ {cell_cfg._target_} is not a Keras RNN cell: it has no state_size"
        )
    return cell


def recurrent_stack(
    cell_cfg: DictConfig, model_cfg: DictConfig, return_sequences: bool = False
) -> Callable[[keras.KerasTensor], keras.KerasTensor]:
    """A function applying `model.layers` recurrent layers, each with a fresh cell."""

    def apply(sequence: keras.KerasTensor) -> keras.KerasTensor:
        for index in range(model_cfg.layers):
            last = index == model_cfg.layers - 1
            sequence = layers.RNN(
                build_cell(cell_cfg),
                return_sequences=return_sequences or not last,
                name=f"recurrent_{index}",
            )(sequence)
            if model_cfg.dropout:
                sequence = layers.Dropout(model_cfg.dropout, name=f"dropout_{index}")(sequence)
        return sequence

    return apply


def decoder_stack(
    cell_cfg: DictConfig, model_cfg: DictConfig
) -> Callable[[keras.KerasTensor], keras.KerasTensor]:
    """Like recurrent_stack with full sequences out, under its own layer names.

    An encoder–decoder model holds both stacks, so their layers must not share names.
    """

    def apply(sequence: keras.KerasTensor) -> keras.KerasTensor:
        for index in range(model_cfg.layers):
            sequence = layers.RNN(
                build_cell(cell_cfg), return_sequences=True, name=f"decoder_{index}"
            )(sequence)
            if model_cfg.dropout:
                sequence = layers.Dropout(model_cfg.dropout, name=f"decoder_dropout_{index}")(
                    sequence
                )
        return sequence

    return apply
