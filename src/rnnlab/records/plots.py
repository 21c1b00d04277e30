"""Figures a person would rather look at than read, ready for MLflow or a report folder."""

from __future__ import annotations

import statistics

import matplotlib

matplotlib.use("Agg")  # no display here or on CI; figures go to files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from numpy.typing import ArrayLike  # noqa: E402

Band = tuple[np.ndarray, np.ndarray]  # low and high edge of a curve's spread over seeds


def curves_figure(
    curves: dict[str, np.ndarray],
    xlabel: str,
    ylabel: str,
    title: str,
    bands: dict[str, Band] | None = None,
) -> Figure:
    """One line per curve against 1, 2, 3, ...; non-finite points are left out.

    A curve with a band (e.g. the range over seeds) is drawn over its shaded spread.
    """
    figure, axes = plt.subplots(figsize=(7, 4), layout="constrained")
    for label, values in curves.items():
        values = np.asarray(values, dtype=float)
        steps = np.arange(1, len(values) + 1)
        shown = np.isfinite(values)
        (line,) = axes.plot(steps[shown], values[shown], label=label)
        if bands and label in bands:
            low, high = (np.asarray(edge, dtype=float) for edge in bands[label])
            filled = shown & np.isfinite(low) & np.isfinite(high)
            axes.fill_between(
                steps[filled], low[filled], high[filled], color=line.get_color(), alpha=0.2
            )
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if len(curves) > 1:
        axes.legend(fontsize="small")
    plt.close(figure)
    return figure


def log10_or_nan(values: ArrayLike) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)


def gradient_decay_figure(
    curves: dict[str, np.ndarray], title: str, bands: dict[str, Band] | None = None
) -> Figure:
    """log10 ||dL/dh_t|| against t: a falling line is a vanishing gradient."""
    logs = {label: log10_or_nan(norms) for label, norms in curves.items()}
    log_bands = {
        label: (log10_or_nan(low), log10_or_nan(high))
        for label, (low, high) in (bands or {}).items()
    }
    return curves_figure(logs, "time step t", "log10 ||dL/dh_t||", title, log_bands)


def metric_by_setting_figure(table: dict, settings: dict[str, str]) -> Figure:
    """Each cell's mean ± std against the row setting (e.g. the adding problem's length)."""
    figure, axes = plt.subplots(figsize=(7, 4), layout="constrained")
    rows = list(settings)
    columns = sorted({column for row in rows for column in table[row]} - {"baseline"})
    for column in columns:
        points = [
            (i, table[row][column].values)
            for i, row in enumerate(rows)
            if table[row][column].values
        ]
        if not points:
            continue
        means = [statistics.mean(values) for _, values in points]
        spreads = [statistics.stdev(values) if len(values) > 1 else 0.0 for _, values in points]
        axes.errorbar(
            [i for i, _ in points], means, yerr=spreads, marker="o", capsize=3, label=column
        )
    axes.set_xticks(range(len(rows)), [settings[row] for row in rows])
    axes.set_ylabel("test metric (mean ± std over seeds)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    plt.close(figure)
    return figure


def pareto_figure(
    points: list, front: list, names: list[str], directions: tuple[str, ...]
) -> Figure:
    """Every completed trial on two objectives, the Pareto front joined and highlighted."""
    figure, axes = plt.subplots(figsize=(7, 4), layout="constrained")
    every = np.asarray(points, dtype=float).reshape(-1, 2)
    best = np.asarray(sorted(front), dtype=float).reshape(-1, 2)
    axes.scatter(every[:, 0], every[:, 1], color="lightgray", label="trials")
    axes.plot(best[:, 0], best[:, 1], "o-", color="tab:red", label="Pareto front")
    arrow = {"maximize": "↑ better", "minimize": "↓ better"}
    axes.set_xlabel(f"{names[0]} ({arrow[directions[0]].replace('↑', '→').replace('↓', '←')})")
    axes.set_ylabel(f"{names[1]} ({arrow[directions[1]]})")
    if "n_params" in names[1]:
        axes.set_yscale("log")
    axes.set_title("Pareto front")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    plt.close(figure)
    return figure


def critical_difference_figure(
    mean_ranks: dict[str, float], cliques: list[list[str]], title: str
) -> Figure:
    """Demšar's diagram: cells on an axis of mean rank (1, the best, on the left), a thick
    bar joining each group of cells that no test tells apart."""
    order = sorted(mean_ranks, key=mean_ranks.__getitem__)
    count = len(order)
    half = (count + 1) // 2
    first_label = max(0.9, 0.65 + 0.12 * len(cliques))  # below the bars
    height = first_label + 0.3 * half + 0.1
    figure, axes = plt.subplots(figsize=(7, 0.5 + height), layout="constrained")
    axes.set_xlim(0.5, max(count, 2) + 0.5)
    axes.set_ylim(height, 0)  # y grows downward: the rank axis on top, labels beneath
    axes.axis("off")
    axes.hlines(0.4, 1, max(count, 2), color="black", linewidth=1)
    for rank in range(1, max(count, 2) + 1):
        axes.vlines(rank, 0.3, 0.4, color="black", linewidth=1)
        axes.text(rank, 0.25, str(rank), ha="center", va="bottom", fontsize="small")
    for index, cell in enumerate(order):
        x = mean_ranks[cell]
        left = index < half  # the better half labelled on the left, the rest on the right
        row = first_label + 0.3 * (index if left else count - 1 - index)
        edge = 0.5 if left else max(count, 2) + 0.5
        axes.plot([x, x, edge], [0.4, row, row], color="black", linewidth=0.8)
        axes.text(
            edge + (0.05 if left else -0.05),
            row - 0.03,
            f"{cell} ({x:.2f})",
            ha="left" if left else "right",
            va="bottom",
            fontsize="small",
        )
    for number, members in enumerate(cliques):
        ranks = [mean_ranks[cell] for cell in members]
        y = 0.55 + 0.12 * number
        axes.hlines(y, min(ranks) - 0.03, max(ranks) + 0.03, color="black", linewidth=3)
    axes.set_title(title, fontsize="medium")
    plt.close(figure)
    return figure
