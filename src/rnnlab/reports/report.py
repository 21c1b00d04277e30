"""`rnnlab report EXP`: the paper's tables and figures, from what MLflow recorded.

Rows are the experiment's task settings, columns its cells and the task's trivial baseline.
An entry is the headline test metric over seeds: mean ± std (n), its 95% interval and the
model's trainable parameters. The last column is the verdict (rnnlab.reports.verdicts): bold marks
a winner only when a test says it beats every other cell and the baseline. A grid point
with no finished run shows as missing rather than failing the report.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from rnnlab.config import ConfigError, compose_config
from rnnlab.experiments.grids import entry_key, grid_facts
from rnnlab.experiments.paper import default_claims_storage
from rnnlab.experiments.tuning import (
    caption,
    chosen_values,
    study_name,
    tune_block,
    tuned_overrides,
)
from rnnlab.records import names
from rnnlab.records.plots import (
    Band,
    critical_difference_figure,
    curves_figure,
    gradient_decay_figure,
    metric_by_setting_figure,
)
from rnnlab.records.runs import decay_curves, finished_runs
from rnnlab.records.tracking import use_store
from rnnlab.reports.across_tasks import Standing, TaskScores, standing
from rnnlab.reports.known_results import (
    IMPORTANCE_FITS,
    IMPORTANCE_TRIALS,
    Claim,
    Finding,
    claims_table,
    judge_claim,
    judge_importance,
)
from rnnlab.reports.seed_groups import log_seed_groups
from rnnlab.reports.sweep_report import fanova_importances
from rnnlab.reports.verdicts import (
    ALPHA,
    CONFIDENCE,
    FEW_SEEDS,
    Verdict,
    cohens_d,
    improvement_interval,
    judge,
    summarize,
)

NOT_ROW_AXES = ("cell", "seed")
BASELINE = "baseline"  # the task's trivial baseline, where it logs one: never in bold

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per curve is noise

CAPTION = (
    f"Test scores over seeds: mean ± std (n runs), the {CONFIDENCE:.0%} Student-t interval "
    "of the mean, the model's trainable parameters, and the p-value of its difference from "
    "the best mean. Verdict: the best mean against every "
    "other cell and the baseline, two-sided t-tests (paired by seed where both ran the same "
    f"seeds, Welch's otherwise), Holm-corrected; bold only when every p < {ALPHA:g} and the "
    "winner beats the baseline. Beside each t-test p, the exact signed-rank (paired) or "
    "rank-sum p of the same comparison, Holm-corrected, which assumes no normal scores; "
    "d is Cohen's d against the best, P(>) the probability that a run beats a run of the "
    "best (ties half) with its bootstrap interval. † not better than the task's trivial "
    f"baseline. n < {FEW_SEEDS}: few seeds, so intervals are wide and tests weak."
)


@dataclass
class Cell:
    """The finished runs of one (row, cell) of the table, one per seed."""

    scores: dict[int, float] = field(default_factory=dict)  # seed -> test score
    runs: list[str] = field(default_factory=list)  # MLflow run ids
    n_params: set[int] = field(default_factory=set)

    @property
    def values(self) -> list[float]:
        return list(self.scores.values())

    def add(
        self, seed: int, score: float, run: str | None = None, n_params: float | None = None
    ) -> None:
        if seed in self.scores:
            return  # an older run of the same point (runs arrive newest first)
        self.scores[seed] = score
        if run is not None:
            self.runs.append(run)
        if n_params is not None:
            self.n_params.add(int(n_params))

    def lines(self) -> list[str]:
        """What the entry says, line by line: score, interval, size."""
        if not self.scores:
            return ["missing"]
        summary = summarize(self.values)
        lines = [f"{summary.mean:.4f} ± {summary.std:.4f} (n={summary.n})"]
        if summary.low is not None:
            lines.append(f"[{summary.low:.4f}, {summary.high:.4f}]")
        if self.n_params:
            lines.append(" / ".join(f"{n:,}" for n in sorted(self.n_params)) + " params")
        return lines


def row_label(axes: list[str], task: str) -> str:
    """`task=adding task.length=50` -> `adding (length=50)`; cell and seed are not rows."""
    settings = [
        f"{key.removeprefix('task.')}={value}"
        for key, value in (axis.split("=", 1) for axis in axes)
        if key not in ("task", *NOT_ROW_AXES)
    ]
    return f"{task} ({', '.join(settings)})" if settings else task


def collect(name: str, tracking_uri: str, tuned: dict[str, tuple[str, ...]] | None = None):
    """The table's rows, columns and cells, filled from the experiment's FINISHED runs
    (of a tuned grid, the runs at each entry's chosen values)."""
    table: dict[str, dict[str, Cell]] = {}
    directions: dict[str, str] = {}
    metrics: dict[str, str] = {}
    wanted: dict[str, tuple[str, str]] = {}
    for point, facts in grid_facts(name, [f"tracking.uri={tracking_uri}"], tuned):
        row = row_label(point.axes, facts.task)
        table.setdefault(row, {}).setdefault(facts.cell, Cell())
        directions[row], metrics[row] = facts.direction, facts.metric
        wanted[facts.config_hash] = (row, facts.cell)
    logged_names = {
        f"{prefix}{metric}" for metric in metrics.values() for prefix in ("test_", "test_baseline_")
    }
    runs = finished_runs(
        tracking_uri,
        name,
        tags=(names.CONFIG_HASH, names.SEED),
        metrics=(*sorted(logged_names), "n_params"),
    )
    for run in runs:
        place = wanted.get(run.tags.get(names.CONFIG_HASH, ""))
        if place is None:
            continue  # a run of an older version of the experiment's config
        row, column = place
        score = run.metrics.get(f"test_{metrics[row]}")
        if score is None:
            continue  # finished without its headline score: nothing to report
        seed = int(run.tags.get(names.SEED, len(table[row][column].scores)))
        table[row][column].add(seed, score, run.run_id, run.metrics.get("n_params"))
        baseline = run.metrics.get(f"test_baseline_{metrics[row]}")
        if baseline is not None:
            table[row].setdefault(BASELINE, Cell()).add(seed, baseline)
    return table, directions, metrics


def verdict(cells: dict[str, Cell], direction: str) -> Verdict:
    baseline = cells.get(BASELINE)
    scores = {column: cell.scores for column, cell in cells.items() if column != BASELINE}
    return judge(scores, direction, baseline.scores if baseline else None)


def entry_lines(cells: dict[str, Cell], column: str, judged: Verdict) -> list[str]:
    """A cell's lines, marked when no better than the baseline; a dash where a task has no
    baseline (that is not a missing run)."""
    if column == BASELINE and BASELINE not in cells:
        return ["—"]
    lines = cells.get(column, Cell()).lines()
    if column in judged.below_baseline:
        lines[0] += " †"
    if column in judged.p_against:
        rank = judged.rank_p_against.get(column)
        beside = f", {rank:.2g} (rank)" if rank is not None else ""
        lines.append(f"p = {judged.p_against[column]:.2g} (t){beside} against {judged.best}")
        if column != BASELINE and judged.best in cells:
            lines += effect_lines(cells[column], cells[judged.best], judged.direction)
    return lines


def effect_lines(cell: Cell, best: Cell, direction: str) -> list[str]:
    """How large the difference from the best is, beyond whether it is significant."""
    d = cohens_d(cell.scores, best.scores)
    chance, low, high = improvement_interval(cell.values, best.values, direction)
    size = f"d = {d:.2g}, " if d is not None else ""
    return [f"{size}P(>) = {chance:.2f} [{low:.2f}, {high:.2f}]"]


def table_columns(table) -> list[str]:
    """The cells in name order, then the baseline if any task has one."""
    columns = sorted({column for cells in table.values() for column in cells} - {BASELINE})
    has_baseline = any(BASELINE in cells for cells in table.values())
    return [*columns, BASELINE] if has_baseline else columns


def markdown_table(table, directions, metrics) -> str:
    columns = table_columns(table)
    lines = [
        "| task | metric | " + " | ".join(columns) + " | verdict |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]
    for row, cells in table.items():
        judged = verdict(cells, directions[row])
        entries = []
        for column in columns:
            text = "<br>".join(entry_lines(cells, column, judged))
            entries.append(f"**{text}**" if column == judged.winner else text)
        arrow = "↑" if directions[row] == "maximize" else "↓"
        rank = judged.rank_text()
        lines.append(
            f"| {row} | test {metrics[row]} {arrow} | "
            + " | ".join(entries)
            + f" | {judged.text()}{'<br>' + rank if rank else ''} |"
        )
    return "\n".join(lines) + "\n\n" + CAPTION + "\n"


def latex_table(table, directions, metrics) -> str:
    columns = table_columns(table)

    def escape(text: str) -> str:
        return (
            text.replace("_", r"\_")
            .replace("±", r"$\pm$")
            .replace("†", r"$\dagger$")
            .replace("<", r"$<$")
            .replace("%", r"\%")
        )

    def stacked(lines: list[str], bold: bool) -> str:
        body = r" \\ ".join(escape(line) for line in lines)
        body = rf"\shortstack{{{body}}}" if len(lines) > 1 else body
        return rf"\textbf{{{body}}}" if bold else body

    lines = [
        r"\begin{table}",
        r"\centering",
        r"\begin{tabular}{ll" + "c" * len(columns) + "l}",
        r"\toprule",
        "task & metric & " + " & ".join(escape(c) for c in columns) + r" & verdict \\",
        r"\midrule",
    ]
    for row, cells in table.items():
        judged = verdict(cells, directions[row])
        entries = [
            stacked(entry_lines(cells, column, judged), column == judged.winner)
            for column in columns
        ]
        lines.append(
            f"{escape(row)} & {escape(metrics[row])} & "
            + " & ".join(entries)
            + f" & {escape(judged.text())} \\\\"
        )
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{escape(CAPTION)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def claims_section(
    name: str, tracking_uri: str, table, directions, tuned
) -> tuple[str, list[tuple[Claim, Finding]]]:
    """The experiment's published claims, each judged from its grid points' seeds (or, for
    an importance claim, from its entry's tuning study)."""
    cfg = compose_config([f"experiment={name}", f"tracking.uri={tracking_uri}"])
    claims = []
    for number, item in enumerate(cfg.get("claims") or []):
        raw = OmegaConf.to_container(item, resolve=True) if isinstance(item, DictConfig) else item
        claims.append(Claim.from_config(number, raw))
    points = grid_facts(name, [f"tracking.uri={tracking_uri}"], tuned)
    found = []
    for number, claim in enumerate(claims):
        if claim.kind == "importance":
            found.append((claim, importance_finding(name, tracking_uri, number, claim, points)))
            continue
        row = claim_row(number, claim.where, points)
        cells = table.get(row, {})
        scores = {column: cell.scores for column, cell in cells.items() if column != BASELINE}
        if claim.kind == "ordering":  # each side may sit in a row of its own
            scores = {}
            for label, axes in claim.sides().items():
                side = table.get(claim_row(number, axes, points), {}).get(axes["cell"])
                scores[label] = side.scores if side else {}
        baseline = cells.get(BASELINE)
        judged = judge_claim(
            claim, scores, directions.get(row, "maximize"), baseline.scores if baseline else None
        )
        found.append((claim, judged))
    return claims_table(found), found


def compute_spent(name: str, tracking_uri: str, table, tuned) -> dict[str, Any]:
    """What the reported runs (and, for a tuned grid, its tuning trials) cost: how many, their
    summed run time, the span from the first start to the last end, and the CPUs they ran
    on, so a claim's verdict travels with the hardware and time it took."""
    reported = {
        run
        for cells in table.values()
        for column, cell in cells.items()
        if column != BASELINE
        for run in cell.runs
    }
    studies = {study_name(name, tracking_uri, key) for key in tuned} if tuned else set()
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    spans, cpus, trials = [], set(), 0
    for tag in (name, f"{name}-tune"):
        for run in client.search_runs(
            experiments, f"tags.`{names.EXPERIMENT}` = '{tag}' and attributes.status = 'FINISHED'"
        ):
            in_grid = run.info.run_id in reported
            in_study = run.data.tags.get(names.OPTUNA_STUDY) in studies
            if not (in_grid or in_study) or run.info.end_time is None:
                continue
            trials += in_study
            spans.append((run.info.start_time, run.info.end_time))
            cpus.add(run.data.tags.get(names.CPU, "unknown CPU"))
    if not spans:
        return {"runs": 0}
    return {
        "runs": len(spans),
        "tuning_trials": trials,
        "run_hours": sum(end - start for start, end in spans) / 3.6e6,
        "span_hours": (max(e for _, e in spans) - min(s for s, _ in spans)) / 3.6e6,
        "first_start": min(s for s, _ in spans),
        "cpus": sorted(cpus),
    }


def compute_section(compute: dict[str, Any]) -> str:
    if not compute.get("runs"):
        return ""
    started = time.strftime("%Y-%m-%d", time.gmtime(compute["first_start"] / 1000))
    return (
        f"\n## Compute\n\n{compute['runs']} runs ({compute['tuning_trials']} of them tuning "
        f"trials) took {compute['run_hours']:.2f} h of run time, {compute['span_hours']:.2f} h "
        f"from the first start to the last end (from {started}; parallel workers overlap, a "
        f"resumed grid's pause counts), on {'; '.join(compute['cpus'])}.\n"
    )


def claims_record(name: str, found: list[tuple[Claim, Finding]], compute: dict[str, Any]) -> str:
    """claims.json: the judged claims and their cost, which `rnnlab.reports.reproduced`
    gathers from every report into one page."""
    claims = [
        {
            "published": claim.published,
            "source": claim.source,
            "figure": claim.figure,
            "ours": finding.ours,
            "outcome": finding.outcome,
            "reason": finding.reason,
        }
        for claim, finding in found
    ]
    return json.dumps({"experiment": name, "claims": claims, "compute": compute}, indent=1)


def claim_point(number: int, where: dict[str, str], points):
    """The first grid point (and its facts) whose axes agree with `where`."""
    for point, facts in points:
        axes = dict(axis.split("=", 1) for axis in point.axes)
        if all(axes.get(key, str(value)) == str(value) for key, value in where.items()):
            return point, facts
    wanted = " ".join(f"{key}={value}" for key, value in where.items())
    raise ConfigError(f"claims[{number}]: no grid point has {wanted}")


def claim_row(number: int, where: dict[str, str], points) -> str:
    """The table row of the grid points `where` picks (its cell aside)."""
    point, facts = claim_point(number, {k: v for k, v in where.items() if k != "cell"}, points)
    return row_label(point.axes, facts.task)


def importance_finding(name: str, tracking_uri: str, number: int, claim: Claim, points):
    """An importance claim, judged from the fANOVA importances of its entry's study."""
    import optuna
    from optuna.trial import TrialState

    if tune_block(name, [f"tracking.uri={tracking_uri}"]) is None:
        raise ConfigError(f"claims[{number}]: an importance claim needs the grid's tune: block")
    point, _ = claim_point(number, claim.where, points)
    storage = default_claims_storage(tracking_uri)
    try:
        study = optuna.load_study(
            study_name=study_name(name, tracking_uri, entry_key(point)), storage=storage
        )
    except KeyError:  # not tuned yet
        return judge_importance(claim, [], 0)
    trials = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if trials < IMPORTANCE_TRIALS:
        return judge_importance(claim, [], trials)
    fits = [fanova_importances(study, seed) for seed in range(IMPORTANCE_FITS)]
    return judge_importance(claim, fits, trials)


def tuning_section(name: str, tracking_uri: str) -> tuple[str, dict[str, tuple[str, ...]]]:
    """A tuned grid's protocol and each entry's chosen values; ("", {}) for an untuned one."""
    block = tune_block(name, [f"tracking.uri={tracking_uri}"])
    if block is None:
        return "", {}
    chosen = chosen_values(name, tracking_uri, default_claims_storage(tracking_uri))
    lines = [
        "\n## Tuning\n",
        caption(block) + "\n",
        "| entry | chosen values | best validation score | trials |",
        "|---|---|---|---|",
    ]
    for key, found in chosen.items():
        values = ", ".join(
            f"{path}={value:.3g}" if isinstance(value, float) else f"{path}={value}"
            for path, value in found.values.items()
        )
        score = "—" if found.score is None else f"{found.score:.4f}"
        lines.append(f"| {key} | {values or 'not tuned yet'} | {score} | {found.trials_text} |")
    return "\n".join(lines) + "\n", dict(tuned_overrides(chosen))


def across_tasks(table, directions, metrics) -> Standing | None:
    """The cells compared over the table's rows (see rnnlab.reports.across_tasks)."""
    tasks = {}
    for row, cells in table.items():
        baseline = cells.get(BASELINE)
        tasks[row] = TaskScores(
            {column: cell.scores for column, cell in cells.items() if column != BASELINE},
            directions[row],
            metrics[row],
            summarize(baseline.values).mean if baseline and baseline.scores else None,
        )
    return standing(tasks) if len(tasks) >= 2 else None


def across_tasks_section(table, directions, metrics, out: Path) -> tuple[str, list[str]]:
    """The report's "Across tasks" text and its critical-difference diagram."""
    result = across_tasks(table, directions, metrics)
    if result is None:
        return "", []
    figure = critical_difference_figure(
        result.mean_ranks,
        result.cliques,
        f"Mean rank over {len(result.tasks)} tasks (bars: no significant difference)",
    )
    figure.savefig(out / "critical_difference.png", dpi=120)
    text = "\n## Across tasks\n\n" + result.markdown()
    (out / "across_tasks.md").write_text(text.lstrip())
    return text, ["critical_difference.png"]


def decay_curve(client: MlflowClient, run_id: str, at_init: bool = False) -> np.ndarray | None:
    """The headline h curve of the run's last probe (or its probe at initialisation), or
    None if it has none."""
    curves = decay_curves(client, run_id, at_init)
    return None if curves is None else np.asarray(curves.headline())


def seed_band(curves: list[np.ndarray]) -> tuple[np.ndarray, Band]:
    """(geometric mean over seeds, (min, max)): decay curves span many decades."""
    stacked = np.maximum(np.stack(curves), 1e-38)
    return 10 ** np.mean(np.log10(stacked), axis=0), (stacked.min(axis=0), stacked.max(axis=0))


def figures(table, metrics, tracking_uri: str, out: Path) -> list[str]:
    """Gradient decay and learning curves per row; the metric against each row setting."""
    client = MlflowClient(tracking_uri)
    written = []
    for index, (row, cells) in enumerate(table.items()):
        learning, learning_bands = {}, {}
        decay: dict[str, tuple[dict[str, np.ndarray], dict[str, Band]]] = {
            "after training": ({}, {}),
            "at initialisation": ({}, {}),
        }
        for column, cell in cells.items():
            if column == BASELINE:
                continue
            for when, (means, bands) in decay.items():
                probed = [
                    decay_curve(client, run, when == "at initialisation") for run in cell.runs
                ]
                curves = [curve for curve in probed if curve is not None]
                if curves and len({len(curve) for curve in curves}) == 1:
                    means[column], bands[column] = seed_band(curves)
            histories = [
                [m.value for m in client.get_metric_history(run, f"val_{metrics[row]}")]
                for run in cell.runs
            ]
            histories = [h for h in histories if h]
            if histories:
                # Runs that stopped early end sooner: the curve goes as far as all of them.
                length = min(len(h) for h in histories)
                stacked = np.array([h[:length] for h in histories])
                learning[column] = stacked.mean(axis=0)
                learning_bands[column] = (stacked.min(axis=0), stacked.max(axis=0))
        slug = f"{index:02d}_{row.split(' ')[0]}"
        for when, (means, bands) in decay.items():
            if not means:
                continue
            title = f"Gradient decay {when}: {row} (band: range over seeds)"
            name = f"{slug}_gradient_decay{'_at_init' if when == 'at initialisation' else ''}.png"
            gradient_decay_figure(means, title, bands).savefig(out / name, dpi=120)
            written.append(name)
        if learning:
            figure = curves_figure(
                learning,
                "epoch",
                f"validation {metrics[row]}",
                f"Learning curves: {row} (mean, band: range over seeds)",
                learning_bands,
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
    """Write the report (Markdown, LaTeX, PNG) into `out_dir`, by default reports/<name>/ of
    the working directory, and log it to MLflow as a report run."""
    # Imports are long-lived: exempt them from garbage collection, which statsmodels' Holm
    # correction runs on every call (0.2 s each over MLflow's and matplotlib's objects).
    gc.freeze()
    out = out_dir or Path("reports") / name
    tuning, tuned = tuning_section(name, tracking_uri)  # first: these may fail
    table, directions, metrics = collect(name, tracking_uri, tuned)
    made = [folder for folder in (out, *out.parents) if not folder.exists()]
    out.mkdir(parents=True, exist_ok=True)
    try:
        (out / "table.md").write_text(markdown_table(table, directions, metrics))
        (out / "table.tex").write_text(latex_table(table, directions, metrics))
        overall, diagrams = across_tasks_section(table, directions, metrics, out)
        claims, found = claims_section(name, tracking_uri, table, directions, tuned)
        compute = compute_spent(name, tracking_uri, table, tuned)
        (out / "claims.json").write_text(claims_record(name, found, compute))
        images = figures(table, metrics, tracking_uri, out)
        body = [f"# Experiment `{name}`\n", markdown_table(table, directions, metrics), tuning]
        body += [claims, overall, compute_section(compute)]
        body += [f"\n![{image}]({image})\n" for image in [*diagrams, *images]]
        (out / "README.md").write_text("".join(body))
    except BaseException:
        if made:  # the folders this report made go with it: no half report is left
            shutil.rmtree(made[-1], ignore_errors=True)
        raise
    entries = {
        (row, column): (metrics[row], cell.runs)
        for row, cells in table.items()
        for column, cell in cells.items()
        if column != BASELINE
    }
    log_seed_groups(MlflowClient(tracking_uri), name, entries)
    use_store(tracking_uri, "reports")
    with mlflow.start_run(run_name=name, tags={names.REPORT: name}):
        mlflow.log_artifacts(str(out), artifact_path=names.REPORT_FOLDER)
    return out
