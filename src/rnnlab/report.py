"""`rnnlab report EXP`: the paper's tables and figures, from what MLflow recorded.

Rows are the experiment's task settings, columns its cells, entries the task's headline
test metric as mean ± std over seeds (n runs), best per row in bold. A grid point with no
finished run shows as missing rather than failing the report.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient

from rnnlab.config import PROJECT_ROOT, compose_config, config_hash
from rnnlab.experiments import experiment_grid
from rnnlab.plots import curves_figure, gradient_decay_figure, metric_by_setting_figure
from rnnlab.tracking import cell_name

NOT_ROW_AXES = ("cell", "seed")
BASELINE = "baseline"  # the task's trivial baseline, where it logs one: never in bold

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per curve is noise


@dataclass
class Cell:
    """The finished runs of one (row, cell) of the table."""

    values: list[float] = field(default_factory=list)
    runs: list = field(default_factory=list)

    def summary(self) -> str:
        if not self.values:
            return "missing"
        spread = statistics.stdev(self.values) if len(self.values) > 1 else 0.0
        return f"{statistics.mean(self.values):.4f} ± {spread:.4f} (n={len(self.values)})"


def row_label(axes: list[str], task: str) -> str:
    """`task=adding task.length=50` -> `adding (length=50)`; cell and seed are not rows."""
    settings = [
        f"{key.removeprefix('task.')}={value}"
        for key, value in (axis.split("=", 1) for axis in axes)
        if key not in ("task", *NOT_ROW_AXES)
    ]
    return f"{task} ({', '.join(settings)})" if settings else task


def collect(name: str, tracking_uri: str):
    """The table's rows, columns and cells, filled from the experiment's FINISHED runs."""
    client = MlflowClient(tracking_uri)
    table: dict[str, dict[str, Cell]] = {}
    directions: dict[str, str] = {}
    metrics: dict[str, str] = {}
    wanted: dict[str, dict] = {}
    for point in experiment_grid(name):
        cfg = compose_config([*point.overrides, f"tracking.uri={tracking_uri}"])
        row = row_label(point.axes, cfg.task.name)
        column = cell_name(cfg.cell)
        table.setdefault(row, {}).setdefault(column, Cell())
        directions[row], metrics[row] = cfg.task.direction, cfg.task.metric
        wanted[config_hash(cfg)] = (row, column)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    for run in client.search_runs(
        experiments,
        filter_string=f"tags.`rnnlab.experiment` = '{name}' and attributes.status = 'FINISHED'",
        max_results=50_000,
    ):
        place = wanted.get(run.data.tags.get("rnnlab.config_hash"))
        if place is None:
            continue  # a run of an older version of the experiment's config
        row, column = place
        cell = table[row][column]
        cell.values.append(run.data.metrics[f"test_{metrics[row]}"])
        cell.runs.append(run)
        baseline = run.data.metrics.get(f"test_baseline_{metrics[row]}")
        if baseline is not None:
            table[row].setdefault(BASELINE, Cell()).values.append(baseline)
    return table, directions, metrics


def best_column(cells: dict[str, Cell], direction: str) -> str | None:
    means = {
        column: statistics.mean(cell.values)
        for column, cell in cells.items()
        if cell.values and column != BASELINE
    }
    if not means or (len(means) > 1 and len(set(means.values())) == 1):
        return None  # nothing measured, or a tie: no entry is the best
    choose = max if direction == "maximize" else min
    return choose(means, key=means.get)


def entry(cells: dict[str, Cell], column: str) -> str:
    """A cell's summary; a dash where a task has no baseline (that is not a missing run)."""
    if column == BASELINE and BASELINE not in cells:
        return "—"
    return cells.get(column, Cell()).summary()


def table_columns(table) -> list[str]:
    """The cells in name order, then the baseline if any task has one."""
    columns = sorted({column for cells in table.values() for column in cells} - {BASELINE})
    has_baseline = any(BASELINE in cells for cells in table.values())
    return [*columns, BASELINE] if has_baseline else columns


def markdown_table(table, directions, metrics) -> str:
    columns = table_columns(table)
    lines = [
        "| task | metric | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for row, cells in table.items():
        best = best_column(cells, directions[row])
        entries = [f"**{cells[c].summary()}**" if c == best else entry(cells, c) for c in columns]
        arrow = "↑" if directions[row] == "maximize" else "↓"
        lines.append(f"| {row} | test {metrics[row]} {arrow} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


def latex_table(table, directions, metrics) -> str:
    columns = table_columns(table)

    def escape(text: str) -> str:
        return text.replace("_", r"\_").replace("±", r"$\pm$")

    lines = [
        r"\begin{tabular}{ll" + "c" * len(columns) + "}",
        r"\toprule",
        "task & metric & " + " & ".join(escape(c) for c in columns) + r" \\",
        r"\midrule",
    ]
    for row, cells in table.items():
        best = best_column(cells, directions[row])
        entries = []
        for column in columns:
            text = escape(entry(cells, column))
            entries.append(rf"\textbf{{{text}}}" if column == best else text)
        lines.append(f"{escape(row)} & {escape(metrics[row])} & " + " & ".join(entries) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def final_decay_curve(client: MlflowClient, run) -> np.ndarray | None:
    """The headline h curve of the run's last probe, or None if it was not probed."""
    files = [a.path for a in client.list_artifacts(run.info.run_id, "gradient_decay")]
    probes = sorted(path for path in files if path.endswith(".json"))
    if not probes:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        path = client.download_artifacts(run.info.run_id, probes[-1], scratch)
        norms = json.loads(Path(path).read_text())["norms"]
    return np.asarray(norms[list(norms)[-1]]["h"])


def figures(table, metrics, tracking_uri: str, out: Path) -> list[str]:
    """Gradient decay and learning curves per row; the metric against each row setting."""
    client = MlflowClient(tracking_uri)
    written = []
    for index, (row, cells) in enumerate(table.items()):
        decay, learning = {}, {}
        for column, cell in cells.items():
            if column == BASELINE:
                continue
            curves = [
                c for c in (final_decay_curve(client, run) for run in cell.runs) if c is not None
            ]
            if curves:
                # The geometric mean over seeds: decay curves span many decades.
                decay[column] = 10 ** np.mean(np.log10(np.maximum(np.stack(curves), 1e-38)), axis=0)
            histories = [
                [m.value for m in client.get_metric_history(run.info.run_id, f"val_{metrics[row]}")]
                for run in cell.runs
            ]
            histories = [h for h in histories if h]
            if histories:
                length = min(len(h) for h in histories)
                learning[column] = np.mean([h[:length] for h in histories], axis=0)
        slug = f"{index:02d}_{row.split(' ')[0]}"
        if decay:
            figure = gradient_decay_figure(decay, f"Gradient decay after training: {row}")
            figure.savefig(out / f"{slug}_gradient_decay.png", dpi=120)
            written.append(f"{slug}_gradient_decay.png")
        if learning:
            figure = curves_figure(
                learning, "epoch", f"validation {metrics[row]}", f"Learning curves: {row}"
            )
            figure.savefig(out / f"{slug}_learning_curves.png", dpi=120)
            written.append(f"{slug}_learning_curves.png")
    settings = {row: row.split("(", 1)[1].rstrip(")") for row in table if "(" in row}
    one_task = len({row.split(" ", 1)[0] for row in table}) == 1
    if len(settings) > 1 and one_task:
        figure = metric_by_setting_figure(table, settings)
        figure.savefig(out / "metric_by_setting.png", dpi=120)
        written.append("metric_by_setting.png")
    return written


def write_report(name: str, tracking_uri: str, out_dir: Path | None = None) -> Path:
    """Write reports/<name>/ (Markdown, LaTeX, PNG) and log it to MLflow as a report run."""
    out = out_dir or PROJECT_ROOT / "reports" / name
    out.mkdir(parents=True, exist_ok=True)
    table, directions, metrics = collect(name, tracking_uri)
    (out / "table.md").write_text(markdown_table(table, directions, metrics))
    (out / "table.tex").write_text(latex_table(table, directions, metrics))
    images = figures(table, metrics, tracking_uri, out)
    body = [f"# Experiment `{name}`\n", markdown_table(table, directions, metrics)]
    body += [f"\n![{image}]({image})\n" for image in images]
    (out / "README.md").write_text("".join(body))
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("reports")
    with mlflow.start_run(run_name=name, tags={"rnnlab.report": name}):
        mlflow.log_artifacts(str(out), artifact_path="report")
    return out
