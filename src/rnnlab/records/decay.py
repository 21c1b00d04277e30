"""The gradient probe's curves as a run stores them: one JSON file per probe.

The probe writes them while it trains (`training/callbacks.py`) and the report reads them
back, possibly from runs stored long before (`records/runs.py`, `decay_curves`), so the
format is defined here only. Its field names and file names are a contract with every
stored run: `{"epoch": 3, "loss": 0.41, "norms": {"lstm": {"h": [...], "c": [...]}}}` at
`gradient_decay/epoch_003.json`, the probe at initialisation being epoch 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rnnlab.records import names


@dataclass(frozen=True)
class DecayCurves:
    """One probe of dL/dh_t: its norm at every step, per probed layer and state."""

    epoch: int  # epochs trained when probed: 0 at initialisation
    loss: float  # the probe batch's loss
    norms: dict[str, dict[str, list[float]]]  # layer -> state ("h", the LSTM's "c") -> norms

    def headline(self) -> list[float]:
        """The curve the report draws: the hidden state `h` of the last probed layer, the
        one the headline decay metrics describe."""
        return self.norms[list(self.norms)[-1]]["h"]


def curves_path(epoch: int) -> str:
    """The artifact path of the probe after `epoch` epochs; zero-padded so that paths sort
    by epoch."""
    return f"{names.DECAY_FOLDER}/epoch_{epoch:03d}.json"


def figure_path(epoch: int) -> str:
    """The artifact path of that probe's plot."""
    return f"{names.DECAY_FOLDER}/epoch_{epoch:03d}.png"


ALL_EPOCHS_FIGURE = f"{names.DECAY_FOLDER}/all_epochs.png"  # the headline curve of every probe
PROBES_DRAWN = 8  # the all-probes plot's curves at most: more turn its legend into the plot


def probes_to_draw(epochs: list[int], at_most: int = PROBES_DRAWN) -> list[int]:
    """The probes the all-probes plot draws: all of them when few, else `at_most` spread
    evenly from the first (at initialisation) to the last, which are always kept. Forty
    epochs of probes in one plot are a rainbow nobody reads, and a legend taller than the
    figure."""
    if len(epochs) <= at_most:
        return list(epochs)
    last = len(epochs) - 1
    return [epochs[round(index * last / (at_most - 1))] for index in range(at_most)]


def is_curves_path(path: str) -> bool:
    """Whether an artifact of the decay folder is a probe's curves (not a plot)."""
    return path.startswith(f"{names.DECAY_FOLDER}/") and path.endswith(".json")


def write(curves: DecayCurves) -> None:
    """Log the probe's curves to the active MLflow run."""
    import mlflow  # seconds to import: reading a stored file does without

    record = {"epoch": curves.epoch, "loss": curves.loss, "norms": curves.norms}
    mlflow.log_dict(record, curves_path(curves.epoch))


def read(path: str | Path) -> DecayCurves:
    """A probe's curves from its downloaded JSON file."""
    record = json.loads(Path(path).read_text())
    return DecayCurves(record["epoch"], record["loss"], record["norms"])
