"""What the tasks that write text (translation, captioning) share as tasks: a decoder
stack of the chosen cell, the masked next-token loss and token accuracy."""

from __future__ import annotations

from collections.abc import Callable

from rnnlab.tasks.base import TaskDefaults
from rnnlab.tasks.seq2seq.losses import TokenAccuracy, masked_crossentropy


class TextGenerationTask(TaskDefaults):
    """A task whose model writes text: `train.run` gives `build_model` a decoder stack."""

    has_decoder = True  # train.run passes them a decoder stack of the chosen cell

    @property
    def loss(self) -> Callable:
        return masked_crossentropy

    @property
    def metrics(self) -> list:
        return [TokenAccuracy()]  # a fresh metric for every compiled model
