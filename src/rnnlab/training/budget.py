"""Parameter budgets: count a model's weights, and choose the width that meets a budget.

Equal width is not equal budget: at 64 units an LSTM carries four times a SimpleRNN's
recurrent weights. `model.param_budget` gives every cell the width whose whole model comes
closest to the budget. Counts come from building the model, never from a formula per
cell, so a user's own cell is sized the same way as Keras's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras
import numpy as np

from rnnlab.config import ConfigError
from rnnlab.recurrence.layer import recurrent_layers

MOST_UNITS = 1 << 14  # a width search gives up beyond this: the budget is a typo


def trainable_count(weights) -> int:
    return int(sum(np.prod(weight.shape) for weight in weights))


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """`n_params` (trainable, whole model) and `n_params_recurrent` (its recurrent layers)."""
    recurrent = [w for layer in recurrent_layers(model) for w in layer.trainable_weights]
    return {
        "n_params": trainable_count(model.trainable_weights),
        "n_params_recurrent": trainable_count(recurrent),
    }


def units_for_budget(budget: int, count_for: Callable[[int], int]) -> int:
    """The width whose model's count is closest to `budget`; the narrower one on a tie.

    `count_for(units)` builds the model at that width and counts it. Counts grow with the
    width, so a doubling search then a bisection need about 2·log2(units) builds.
    """
    count_for = functools.cache(count_for)
    smallest = count_for(1)
    if smallest >= budget:
        if smallest > budget:
            raise ConfigError(
                f"model.param_budget={budget} is below this model's smallest size: "
                f"{smallest} parameters at 1 unit"
            )
        return 1
    low, high = 1, 2  # count_for(low) < budget throughout
    while count_for(high) < budget:
        low, high = high, high * 2
        if high > MOST_UNITS:
            raise ConfigError(
                f"model.param_budget={budget} needs more than {MOST_UNITS} units for this model"
            )
    while high - low > 1:  # count_for(high) >= budget throughout
        middle = (low + high) // 2
        if count_for(middle) < budget:
            low = middle
        else:
            high = middle
    below, above = budget - count_for(low), count_for(high) - budget
    return low if below <= above else high
