"""One MLflow run per grid entry that stands for its seeds: mean, spread and interval.

MLflow's most requested comparison feature is grouping repeated runs and showing their
mean and spread (mlflow issues #3762, #4277); it has none. The report therefore logs, in
the seeds' own MLflow experiment, a group run per (task setting, cell): its metrics are the
seeds' mean, std, interval bounds and count, under the same names the report prints; its
params are the seeds' config without the seed; and the seed runs become its children, so
the runs table folds them under it and the chart and compare views compare cells by group.

A group is logged again only when its seeds changed (a resumed grid finished more), and
its old run is deleted then: one group per entry, always the current one.
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from rnnlab.records import names
from rnnlab.reports.verdicts import summarize

PARENT_TAG = MLFLOW_PARENT_RUN_ID
PARAMS_PER_BATCH = 100  # MLflow's limit on one log_batch call


def group_key(experiment: str, row: str, cell: str) -> str:
    return f"{experiment} | {row} | {cell}"


def log_seed_groups(
    client: MlflowClient, experiment: str, entries: dict[tuple[str, str], tuple[str, list[str]]]
) -> dict[tuple[str, str], str]:
    """Log or keep a group run for every (row, cell) entry: `entries` maps it to its
    headline metric and its seed runs' ids. Returns each entry's group run id."""
    groups: dict[tuple[str, str], str] = {}
    if not any(run_ids for _, run_ids in entries.values()):
        return groups  # nothing ran: not even a look at the store, which might create it
    existing = current_groups(client, experiment)
    for (row, cell), (metric, run_ids) in entries.items():
        if not run_ids:
            continue
        key = group_key(experiment, row, cell)
        seeds = ",".join(sorted(run_ids))
        old = existing.get(key)
        if old is not None and old.data.tags.get(names.SEED_RUNS) == seeds:
            groups[(row, cell)] = old.info.run_id
            continue
        if old is not None:
            client.delete_run(old.info.run_id)
        groups[(row, cell)] = log_group(client, experiment, key, row, cell, metric, run_ids)
    return groups


def current_groups(client: MlflowClient, experiment: str) -> dict:
    """The experiment's live group runs by key (the newest, should two have raced)."""
    found: dict = {}
    experiments = [e.experiment_id for e in client.search_experiments()]
    for run in client.search_runs(
        experiments,
        filter_string=f"tags.`{names.SEED_GROUP}` = '{experiment}'",
        order_by=["attributes.start_time ASC"],
        max_results=50_000,
    ):
        found[run.data.tags[names.GROUP_KEY]] = run
    return found


def log_group(
    client: MlflowClient,
    experiment: str,
    key: str,
    row: str,
    cell: str,
    metric: str,
    run_ids: list[str],
) -> str:
    """A FINISHED run holding the seeds' summary, made the parent of every seed run."""
    seed_runs = [client.get_run(run_id) for run_id in run_ids]
    scores = [
        run.data.metrics[f"test_{metric}"]
        for run in seed_runs
        if f"test_{metric}" in run.data.metrics
    ]
    summary = summarize(scores)
    first = seed_runs[0]
    group = client.create_run(
        first.info.experiment_id,
        run_name=f"{row} · {cell} ({summary.n} seeds)",
        tags={
            names.SEED_GROUP: experiment,
            names.GROUP_KEY: key,
            names.SEED_RUNS: ",".join(sorted(run_ids)),
            names.TASK: first.data.tags.get(names.TASK, ""),
            names.CELL: cell,
            MLFLOW_RUN_NAME: f"{row} · {cell} ({summary.n} seeds)",
        },
    )
    values = {
        f"test_{metric}": summary.mean,  # the seeds' own name: charts put groups beside runs
        f"test_{metric}_std": summary.std,
        "n_seeds": float(summary.n),
    }
    if summary.low is not None and summary.high is not None:
        values |= {f"test_{metric}_low": summary.low, f"test_{metric}_high": summary.high}
    if "n_params" in first.data.metrics:
        values["n_params"] = first.data.metrics["n_params"]
    timestamp = group.info.start_time
    client.log_batch(
        group.info.run_id,
        metrics=[Metric(name, value, timestamp, 0) for name, value in values.items()],
    )
    params = [Param(name, value) for name, value in first.data.params.items() if name != "seed"]
    for start in range(0, len(params), PARAMS_PER_BATCH):
        client.log_batch(group.info.run_id, params=params[start : start + PARAMS_PER_BATCH])
    for run in seed_runs:
        client.log_batch(run.info.run_id, tags=[RunTag(PARENT_TAG, group.info.run_id)])
    client.set_terminated(group.info.run_id, "FINISHED")
    return group.info.run_id
