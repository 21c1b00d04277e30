"""Figures a person would rather look at than read, ready for `mlflow.log_figure`."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display here or on CI; figures go to files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def gradient_decay_figure(curves: dict[str, np.ndarray], title: str) -> Figure:
    """log10 ||dL/dh_t|| against t, one line per curve: a falling line is a vanishing gradient."""
    figure, axes = plt.subplots(figsize=(7, 4), layout="constrained")
    for label, norms in curves.items():
        steps = np.arange(1, len(norms) + 1)
        reached = norms > 0
        axes.plot(steps[reached], np.log10(norms[reached]), label=label)
    axes.set_xlabel("time step t")
    axes.set_ylabel("log10 ||dL/dh_t||")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if len(curves) > 1:
        axes.legend(fontsize="small")
    plt.close(figure)
    return figure
