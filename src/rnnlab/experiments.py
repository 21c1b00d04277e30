"""Paper experiments: every configuration of a `conf/experiment/` grid, resumably.

An experiment is a Hydra overlay whose `hydra.sweeper.params` is its grid (so
`rnnlab train -m experiment=NAME` also runs it), with optional `experiment_task_overrides`
that size each task for the experiment's budget. `rnnlab paper NAME` runs each point through
`run`, skipping any whose resolved config already has a FINISHED run in MLflow: a killed
`make paper` continues where it stopped.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rnnlab.config import CONF_DIR, ConfigError, compose_config, config_hash, group_choices


@dataclass
class GridPoint:
    """One configuration of an experiment: its grid coordinates and all its overrides."""

    axes: list[str]  # e.g. ["task=adding", "cell=lstm", "seed=0"]
    overrides: list[str]  # the experiment, the axes, then the task's own overrides


def experiment_grid(name: str) -> list[GridPoint]:
    """Every point of the experiment's grid, in a stable order."""
    if name not in group_choices("experiment"):
        raise ConfigError(
            f"unknown experiment '{name}'; choose one of: {', '.join(group_choices('experiment'))}"
        )
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=[f"experiment={name}"], return_hydra_config=True
        )
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    axes = [
        [f"{key}={value.strip()}" for value in str(values).split(",")]
        for key, values in params.items()
    ]
    per_task = cfg.experiment_task_overrides
    grid = []
    for axes_values in itertools.product(*axes):
        task = next((o.split("=", 1)[1] for o in axes_values if o.startswith("task=")), None)
        extra = list(per_task.get(task or cfg.task.name, []))
        grid.append(GridPoint(list(axes_values), [f"experiment={name}", *axes_values, *extra]))
    return grid


def finished_hashes(tracking_uri: str, experiment_name: str) -> set[str]:
    """Config hashes of the experiment's FINISHED runs in the store."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    runs = client.search_runs(
        experiments,
        filter_string=(
            f"tags.`rnnlab.experiment` = '{experiment_name}' and attributes.status = 'FINISHED'"
        ),
        max_results=50_000,
    )
    return {run.data.tags.get("rnnlab.config_hash") for run in runs}


def run_experiment(name: str, extra_overrides: list[str] = ()) -> dict[str, int]:
    """Run every missing point of the grid; returns how many ran, were skipped or failed."""
    from rnnlab.callbacks import NonFiniteLossError
    from rnnlab.tracking import use_store
    from rnnlab.train import run

    grid = experiment_grid(name)
    points = [compose_config([*point.overrides, *extra_overrides]) for point in grid]
    use_store(points[0].tracking.uri, points[0].tracking.experiment)
    done = finished_hashes(points[0].tracking.uri, name)
    counts = {"ran": 0, "skipped": 0, "failed": 0}
    for number, cfg in enumerate(points, start=1):
        label = f"[{number}/{len(points)}] {' '.join(grid[number - 1].axes)}"
        if config_hash(cfg) in done:
            print(f"{label}: finished before, skipped", flush=True)
            counts["skipped"] += 1
            continue
        print(f"{label}: training", flush=True)
        try:
            run(cfg)
        except NonFiniteLossError as error:
            # Recorded as a FAILED run with its reason; the report shows the cell as missing.
            print(f"{label}: failed: {error}", flush=True)
            counts["failed"] += 1
            continue
        counts["ran"] += 1
    return counts
