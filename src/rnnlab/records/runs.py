"""The finished runs of a paper experiment, found fast in a store of thousands.

`MlflowClient.search_runs` loads every matching run's params, metrics and tags: at 3,000
runs of rnnlab's shape the resume check alone took 17 s, growing linearly. A report and a
resume need only a few tags and metrics per run, so on a database store (SQLite,
PostgreSQL, MySQL) they are read with one query over MLflow's `runs`, `tags` and
`latest_metrics` tables. Any other store (an MLflow server over HTTP) goes through the
API, a page at a time. Both give the same answer; tests hold them to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
PAGE = 1000


@dataclass(frozen=True)
class FinishedRun:
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def is_database(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in DATABASE_SCHEMES


def finished_runs(
    uri: str, experiment_name: str, tags: tuple[str, ...] = (), metrics: tuple[str, ...] = ()
) -> list[FinishedRun]:
    """Active FINISHED runs tagged `rnnlab.experiment=<name>`, with the asked tags and
    latest metric values (absent ones left out), newest first."""
    if is_database(uri):
        return from_database(uri, experiment_name, tags, metrics)
    return from_api(uri, experiment_name, tags, metrics)


def from_database(uri, experiment_name, tags, metrics) -> list[FinishedRun]:
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return []  # reading must not create the store
    engine = sa.create_engine(uri)
    try:
        if not sa.inspect(engine).has_table("runs"):
            return []  # a store MLflow has not written to yet
        with engine.connect() as connection:
            started = run_starts(connection, experiment_name)
            found_tags = key_values(connection, "tags", tags, experiment_name, started)
            found_metrics = key_values(
                connection, "latest_metrics", metrics, experiment_name, started
            )
    finally:
        engine.dispose()
    order = sorted(started, key=lambda run_id: started[run_id], reverse=True)
    return [
        FinishedRun(run_id, found_tags.get(run_id, {}), found_metrics.get(run_id, {}))
        for run_id in order
    ]


def run_starts(connection, experiment_name: str) -> dict[str, int]:
    query = sa.text(
        "SELECT r.run_uuid, r.start_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = 'rnnlab.experiment' AND t.value = :name "
        "AND r.status = 'FINISHED' AND r.lifecycle_stage = 'active'"
    )
    return {row[0]: row[1] or 0 for row in connection.execute(query, {"name": experiment_name})}


def key_values(connection, table: str, keys: tuple[str, ...], name: str, runs: dict) -> dict:
    """{run_id: {key: value}} of the experiment's finished runs, for the asked keys only."""
    if not keys or not runs:
        return {}
    query = sa.text(
        f"SELECT t.run_uuid, t.key, t.value FROM {table} t "
        "JOIN tags e ON e.run_uuid = t.run_uuid "
        "WHERE e.key = 'rnnlab.experiment' AND e.value = :name AND t.key IN :keys"
    ).bindparams(sa.bindparam("keys", expanding=True))
    found: dict[str, dict] = {}
    for run_id, key, stored in connection.execute(query, {"name": name, "keys": list(keys)}):
        if run_id in runs:
            found.setdefault(run_id, {})[key] = stored if table == "tags" else float(stored)
    return found


def from_api(uri, experiment_name, tags, metrics) -> list[FinishedRun]:
    from mlflow import MlflowClient  # seconds to import: the database path does without

    client = MlflowClient(uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    query = f"tags.`rnnlab.experiment` = '{experiment_name}' and attributes.status = 'FINISHED'"
    found, token = [], None
    while True:
        page = client.search_runs(
            experiments, filter_string=query, max_results=PAGE, page_token=token
        )
        for run in page:
            found.append(
                FinishedRun(
                    run.info.run_id,
                    {key: run.data.tags[key] for key in tags if key in run.data.tags},
                    {key: run.data.metrics[key] for key in metrics if key in run.data.metrics},
                )
            )
        token = page.token
        if not token:
            return found
