"""Reading runs back: the one place commands (report, paper, sweep, evaluate, reproduce)
find runs and read what they stored, so none reaches into MLflow its own way.

- `finished_runs`: an experiment's FINISHED runs, with a few tags and metrics each.
- `stored_config`: the config a run trained with (its `config.yaml`), in today's keys.
- `stored_packages`: the packages installed when it trained (its `environment.txt`).
- `decay_curves`: its gradient probe's curves (the format is `records/decay.py`'s).

`MlflowClient.search_runs` loads every matching run's params, metrics and tags: at 3,000
runs of rnnlab's shape the resume check alone took 17 s, growing linearly. A report and a
resume need only a few tags and metrics per run, so on a database store (SQLite,
PostgreSQL, MySQL) `finished_runs` reads them with one query over MLflow's `runs`, `tags`
and `latest_metrics` tables. Any other store (an MLflow server over HTTP) goes through the
API, a page at a time. Both give the same answer; tests hold them to it.

MLflow itself is imported where a reader needs it: it takes seconds, and the commands that
only query a database store do without.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import sqlalchemy as sa
from omegaconf import DictConfig, OmegaConf

from rnnlab.config import migrate_stored
from rnnlab.records import decay, names

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from sqlalchemy.engine import Connection

DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
PAGE = 1000


@dataclass(frozen=True)
class FinishedRun:
    """A finished run as `finished_runs` gives it: only the tags and metrics asked for."""

    run_id: str
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def is_database(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in DATABASE_SCHEMES


def finished_runs(
    uri: str, experiment_name: str, tags: tuple[str, ...] = (), metrics: tuple[str, ...] = ()
) -> list[FinishedRun]:
    """Active FINISHED runs tagged `rnnlab.experiment=<name>` (names.EXPERIMENT), with the
    asked tags and latest metric values (absent ones left out), newest first."""
    if is_database(uri):
        return from_database(uri, experiment_name, tags, metrics)
    return from_api(uri, experiment_name, tags, metrics)


def from_database(
    uri: str, experiment_name: str, tags: tuple[str, ...], metrics: tuple[str, ...]
) -> list[FinishedRun]:
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


def run_starts(connection: Connection, experiment_name: str) -> dict[str, int]:
    query = sa.text(
        "SELECT r.run_uuid, r.start_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = :experiment_tag AND t.value = :name "
        "AND r.status = 'FINISHED' AND r.lifecycle_stage = 'active'"
    )
    bound = {"experiment_tag": names.EXPERIMENT, "name": experiment_name}
    return {row[0]: row[1] or 0 for row in connection.execute(query, bound)}


def key_values(
    connection: Connection, table: str, keys: tuple[str, ...], name: str, runs: dict[str, int]
) -> dict[str, dict]:
    """{run_id: {key: value}} of the experiment's finished runs, for the asked keys only."""
    if not keys or not runs:
        return {}
    query = sa.text(
        f"SELECT t.run_uuid, t.key, t.value FROM {table} t "
        "JOIN tags e ON e.run_uuid = t.run_uuid "
        "WHERE e.key = :experiment_tag AND e.value = :name AND t.key IN :keys"
    ).bindparams(sa.bindparam("keys", expanding=True))
    bound = {"experiment_tag": names.EXPERIMENT, "name": name, "keys": list(keys)}
    found: dict[str, dict] = {}
    for run_id, key, stored in connection.execute(query, bound):
        if run_id in runs:
            found.setdefault(run_id, {})[key] = stored if table == "tags" else float(stored)
    return found


def from_api(
    uri: str, experiment_name: str, tags: tuple[str, ...], metrics: tuple[str, ...]
) -> list[FinishedRun]:
    from mlflow import MlflowClient  # seconds to import: the database path does without

    client = MlflowClient(uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    query = f"tags.`{names.EXPERIMENT}` = '{experiment_name}' and attributes.status = 'FINISHED'"
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


class RunNotFoundError(LookupError):
    """The store holds no run of that id."""


class MissingRecordError(LookupError):
    """The run lacks a record rnnlab stores with every run; the message says which."""


def stored_config(client: MlflowClient, run_id: str) -> DictConfig:
    """The config the run trained with, read from its `config.yaml` and migrated to today's
    keys: the whole recipe to rerun or rescore it."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        raise RunNotFoundError(f"no run {run_id} in this store") from None
    with tempfile.TemporaryDirectory() as scratch:
        try:
            path = client.download_artifacts(run_id, names.CONFIG_FILE, scratch)
        except (MlflowException, OSError):
            raise MissingRecordError(
                f"run {run_id} has no {names.CONFIG_FILE} artifact: it was not recorded by "
                "rnnlab or its artifacts are gone"
            ) from None
        # rnnlab writes config.yaml from a DictConfig: it loads as a mapping, not a list.
        return migrate_stored(cast(DictConfig, OmegaConf.load(Path(path))))


def stored_packages(client: MlflowClient, run_id: str) -> set[str] | None:
    """`name==version` of every package installed when the run trained, or None if it
    recorded none."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as scratch:
        try:
            path = client.download_artifacts(run_id, names.ENVIRONMENT_FILE, scratch)
        except (MlflowException, OSError):
            return None
        return set(Path(path).read_text().split())


def decay_curves(
    client: MlflowClient, run_id: str, at_init: bool = False
) -> decay.DecayCurves | None:
    """The run's last gradient probe (or its probe at initialisation), or None if it has
    none: runs made before rnnlab probed at initialisation have no epoch 0."""
    files = [item.path for item in client.list_artifacts(run_id, names.DECAY_FOLDER)]
    probes = sorted(path for path in files if decay.is_curves_path(path))
    if not probes:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        path = client.download_artifacts(run_id, probes[0 if at_init else -1], scratch)
        curves = decay.read(path)
    if at_init and curves.epoch != 0:
        return None
    return curves
