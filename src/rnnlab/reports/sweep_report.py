"""What a finished sweep leaves in its MLflow parent run, and the winner as a Hydra experiment.

The parent run gets the best value and params, trial counts, Optuna's plots (one HTML page
that works offline), the fANOVA importances as a table, and `<study>_best.yaml`, also
written to conf/experiment/ of the working directory (or `--output`), so that, run from the
project's root, the winner retrains with `rnnlab train experiment=<study>_best`. A
multi-objective sweep has no single winner: its parent run gets the Pareto front instead,
as a table, a PNG and Optuna's plot.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, cast

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState

from rnnlab.config import CONF_DIR
from rnnlab.experiments.sweep_file import Sweep
from rnnlab.records import names
from rnnlab.records.plots import pareto_figure

PLOTS = {
    "optimization_history": optuna.visualization.plot_optimization_history,
    "intermediate_values": optuna.visualization.plot_intermediate_values,
    "parallel_coordinate": optuna.visualization.plot_parallel_coordinate,
}
# Optuna's default is 64 trees. 16 gave the same importances to three decimals on a
# 1,000-trial study in 4.2 s against 19 s (benchmarks/RESULTS.md, sweeps at scale).
FANOVA_TREES = 16


class KnownImportances(optuna.importance.BaseImportanceEvaluator):
    """Importances computed once, for Optuna's plot, which would otherwise fit fANOVA again."""

    def __init__(self, importances: dict[str, float]) -> None:
        self.importances = importances

    def evaluate(self, study, params=None, *, target=None) -> dict[str, float]:
        return dict(self.importances)


def plots_with_importances(importances: dict[str, float] | None) -> dict:
    """PLOTS, and the importance plot when there are importances to draw."""
    if importances is None:
        return PLOTS
    evaluator = KnownImportances(importances)
    return {
        **PLOTS,
        "param_importances": lambda study: optuna.visualization.plot_param_importances(
            study, evaluator=evaluator
        ),
    }


def best_experiment(sweep: Sweep, params: dict, header: str) -> str:
    """The sweep's overrides plus the best params as a `# @package _global_` experiment.

    Config groups (`cell: gru`) become `override /cell: gru` in the defaults list; other keys
    are nested values. Tracking keys stay out: the retrained run logs wherever it is told.
    """
    overrides = [*sweep.overrides, *(f"{path}={value}" for path, value in params.items())]
    groups: dict[str, str] = {}
    values = OmegaConf.create()
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key.startswith("tracking."):
            continue
        if (CONF_DIR / key).is_dir():
            groups[key] = str(override.value())
        else:
            OmegaConf.update(values, key, override.value(), force_add=True)
    body: dict[str, Any] = {}
    if groups:
        body["defaults"] = [{f"override /{group}": choice} for group, choice in groups.items()]
    # A complete experiment: its runs are tagged with its name, and `rnnlab paper` runs it.
    body["experiment_name"] = f"{sweep.name}_best"
    body.update(cast(dict[str, Any], OmegaConf.to_container(values)))  # made as a mapping
    return f"# @package _global_\n{header}" + yaml.safe_dump(body, sort_keys=False)


def log_best_trial_test(client: MlflowClient, run_id: str, best, metric: str) -> None:
    """The best trial's test score, from the weights of the epoch its value comes from."""
    trial_run = best.user_attrs.get(names.TRIAL_RUN_ID)
    if not trial_run:
        return
    logged = client.get_run(trial_run).data.metrics
    if f"test_{metric}" not in logged:
        return
    summary = {f"best_trial.test_{metric}": logged[f"test_{metric}"]}
    if "best_epoch" in logged:
        summary["best_trial.best_epoch"] = logged["best_epoch"]
    for name, value in summary.items():
        client.log_metric(run_id, name, value)
    epoch = f" (weights of epoch {int(logged['best_epoch'])})" if "best_epoch" in logged else ""
    print(
        f"best trial {best.number}: val_{metric} {best.value:.4f}, "
        f"test_{metric} {logged[f'test_{metric}']:.4f}{epoch}",
        flush=True,
    )


def write_best_experiment(study: optuna.Study, sweep: Sweep, folder: Path) -> Path:
    """`<folder>/<study>_best.yaml`. In rnnlab's conf/experiment/ (a sweep run from the
    project's root) it retrains by name; elsewhere its header says where to put it first."""
    best = study.best_trial
    name = f"{sweep.name}_best"
    retrain = f"rnnlab train experiment={name}"
    if folder.resolve() != (CONF_DIR / "experiment").resolve():
        retrain = f"copy it into {CONF_DIR / 'experiment'}/, then {retrain}"
    header = (
        f"# Trial {best.number} of sweep '{sweep.name}': val_{sweep.metric} {best.value:.4f}.\n"
        f"# Written by `rnnlab sweep {sweep.source}`; retrain: {retrain}\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(best_experiment(sweep, best.params, header))
    print(f"the best trial as an experiment: {path} (retrain: {retrain})", flush=True)
    return path


def fanova_importances(study: optuna.Study, seed: int = 0) -> dict[str, float]:
    """fANOVA's importance of each searched key; `seed` seeds its random forest."""
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=FANOVA_TREES, seed=seed)
    return optuna.importance.get_param_importances(study, evaluator=evaluator)


def report(
    study: optuna.Study,
    sweep: Sweep,
    client: MlflowClient,
    run_id: str,
    experiment_folder: Path,
) -> Path | None:
    """Log the sweep's outcome to its parent run; returns the best-experiment file, if any."""
    trials = study.get_trials(deepcopy=False)
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        count = sum(1 for trial in trials if trial.state == state)
        client.log_metric(run_id, f"trials_{state.name.lower()}", count)
    if not any(trial.state == TrialState.COMPLETE for trial in trials):
        return None
    if sweep.multi_objective:
        report_pareto_front(study, sweep, client, run_id)
        return None
    best = study.best_trial
    assert best.value is not None  # Optuna completes a trial of one objective with its value
    client.log_metric(run_id, f"best_val_{sweep.metric}", best.value)
    client.set_tag(run_id, names.BEST_TRIAL, str(best.number))
    log_best_trial_test(client, run_id, best, sweep.metric)
    for path, value in best.params.items():
        client.set_tag(run_id, f"{names.BEST_PARAM_PREFIX}{path}", str(value))
    best_file = write_best_experiment(study, sweep, experiment_folder)
    client.log_artifact(run_id, str(best_file))
    with tempfile.TemporaryDirectory() as folder:
        importances: dict[str, float] | None = None
        try:
            importances = fanova_importances(study)
        except Exception as error:  # fANOVA needs two completed trials with varied params
            Path(folder, "fanova_importances.txt").write_text(f"not computed: {error}\n")
        if importances is not None:
            client.log_table(
                run_id,
                {"param": list(importances), "importance": list(importances.values())},
                artifact_file=f"{names.SWEEP_PLOTS_FOLDER}/fanova_importances.json",
            )
        write_plots(study, plots_with_importances(importances), Path(folder))
        Path(folder, "best_params.json").write_text(json.dumps(best.params, indent=2))
        client.log_artifacts(run_id, folder, artifact_path=names.SWEEP_PLOTS_FOLDER)
    return best_file


def write_plots(study: optuna.Study, plots: dict, folder: Path) -> None:
    """Optuna's plots on one page, `sweep.html`, with Plotly's script inlined once.

    From Plotly's CDN the page would be empty on an offline machine; inlined per plot, each
    file would carry the 4 MB script. A plot that cannot be drawn yet (too few trials)
    says why in `<name>.txt` and the sweep goes on.
    """
    sections: list[str] = []
    for name, plot in plots.items():
        try:
            figure = plot(study)
        except Exception as error:  # a plot needing more trials must not fail the sweep
            Path(folder, f"{name}.txt").write_text(f"not drawn: {error}\n")
            continue
        # The first plot carries Plotly's script for the page.
        body = figure.to_html(full_html=False, include_plotlyjs=not sections, div_id=name)
        sections.append(f'<h2 id="{name}-title">{name.replace("_", " ")}</h2>\n{body}')
    if sections:
        title = f"Sweep {study.study_name}"
        page = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        page += f"<body><h1>{title}</h1>\n" + "\n".join(sections) + "</body></html>\n"
        Path(folder, "sweep.html").write_text(page)


def report_pareto_front(study: optuna.Study, sweep: Sweep, client: MlflowClient, run_id: str):
    """The trials no other trial beats on every objective: a table, a PNG, Optuna's plot."""
    objectives = [f"val_{sweep.metric}", *sweep.costs]
    front = sorted(study.best_trials, key=lambda trial: trial.number)
    client.log_metric(run_id, "pareto_front_size", len(front))
    columns: dict[str, list] = {"trial": [t.number for t in front]}
    for index, name in enumerate(objectives):
        columns[name] = [t.values[index] for t in front]
    test_name = f"test_{sweep.metric}"
    columns[test_name] = [trial_metric(client, t, test_name) for t in front]
    for path in sorted({path for t in front for path in t.params}):
        columns[path] = [t.params.get(path) for t in front]
    client.log_table(run_id, columns, artifact_file=f"{names.PARETO_FOLDER}/front.json")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in zip(*columns.values(), strict=True):
        lines.append("| " + " | ".join(cell_text(value) for value in row) + " |")
    table = "\n".join(lines) + "\n"
    client.log_text(run_id, table, f"{names.PARETO_FOLDER}/front.md")
    print(f"Pareto front of sweep '{sweep.name}' ({len(front)} of {len(study.trials)} trials):")
    print(table, end="", flush=True)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if len(objectives) == 2:
        figure = pareto_figure(
            [t.values for t in complete], [t.values for t in front], objectives, sweep.directions
        )
        client.log_figure(run_id, figure, f"{names.PARETO_FOLDER}/front.png")
    plots = {
        "pareto_front": lambda study: optuna.visualization.plot_pareto_front(
            study, target_names=objectives
        )
    }
    with tempfile.TemporaryDirectory() as folder:
        write_plots(study, plots, Path(folder))
        client.log_artifacts(run_id, folder, artifact_path=names.PARETO_FOLDER)


def trial_metric(client: MlflowClient, trial, name: str) -> float | None:
    run_id = trial.user_attrs.get(names.TRIAL_RUN_ID)
    return client.get_run(run_id).data.metrics.get(name) if run_id else None


def cell_text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)
