"""Open an MLflow run that records everything needed to trust and rerun it.

The run logs the flattened config as params, the resolved config as `config.yaml`, and tags
for provenance (their names are `names.py`'s). It always ends in a final state: FAILED on an
error, KILLED on Ctrl-C or when a sweep prunes it (tagged `rnnlab.pruned`); a run whose
process was killed outright is failed by the next command that opens the store
(`liveness.py`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import subprocess
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import mlflow
import optuna
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

import rnnlab
from rnnlab.config import PROJECT_ROOT, cell_name, config_hash
from rnnlab.interrupts import interrupted
from rnnlab.records import names
from rnnlab.records.liveness import fail_dead_runs, heartbeat, owner_tags
from rnnlab.records.store_access import create_store

if TYPE_CHECKING:  # types only: TensorFlow loads with the model, not with the store
    from mlflow.data.dataset import Dataset

    from rnnlab.recurrence.layer import ProbedRNN
    from rnnlab.tasks.base import DatasetRecord

MAX_PARAM_LENGTH = 6000  # MLflow 3 rejects longer param values
# Four lines a run on starting and stopping its system metrics thread, and no GPU here.
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'cell': {'units': 64}} -> {'cell.units': 64}, the form MLflow params take."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def git_state() -> dict[str, str]:
    """The commit of the project tree and whether it had uncommitted changes."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {names.GIT_COMMIT: "unknown"}
    return {
        names.GIT_COMMIT: commit,
        names.GIT_DIRTY: str(bool(git("status", "--porcelain"))),
    }


@functools.cache  # a sweep's trials share one process and its packages
def installed_packages() -> str:
    """`name==version` of every installed distribution: what a rerun must match."""
    from importlib.metadata import distributions

    return "\n".join(sorted({f"{d.metadata['Name']}=={d.version}" for d in distributions()})) + "\n"


@functools.cache  # this process's code and packages do not change while it runs
def provenance_tags() -> dict[str, str]:
    import keras
    import tensorflow as tf

    from rnnlab.recurrence.native import native_status
    from rnnlab.recurrence.native.build import this_cpu

    native = native_status()
    return {
        **git_state(),
        names.VERSION: rnnlab.__version__,
        names.TENSORFLOW_VERSION: tf.__version__,
        names.KERAS_VERSION: keras.__version__,
        names.CPU: this_cpu().model,
        names.DEVICE: training_device(),
        names.NATIVE: (f"on ({' '.join(native.flags) or 'portable'})" if native.library else "off"),
    }


def training_device() -> str:
    """Where this process trains: the GPU TensorFlow sees first (a worker's own, given
    through CUDA_VISIBLE_DEVICES), else the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        return "CPU"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{gpus[0].name} (CUDA_VISIBLE_DEVICES={visible})" if visible else gpus[0].name


# MLflow 3's UI reads this experiment tag: without it an experiment opens in the GenAI
# view and files training runs under "Evaluation runs".
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def use_store(uri: str, experiment: str) -> None:
    """Point MLflow at the store (creating a local SQLite file's folder and tables, once
    however many processes start on it) and the experiment, which the UI is told holds
    model training."""
    if uri.startswith("sqlite:///"):
        create_store(uri)
    mlflow.set_tracking_uri(uri)
    for run_id in fail_dead_runs(uri):
        print(f"rnnlab: run {run_id} was RUNNING but its process died; marked FAILED", flush=True)
    client = mlflow.MlflowClient()
    if client.get_experiment_by_name(experiment) is None:
        try:
            client.create_experiment(
                experiment, artifact_location=artifacts_beside(uri, experiment)
            )
        except MlflowException as error:  # another worker created it between look and create
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    current = mlflow.set_experiment(experiment)
    for key, value in EXPERIMENT_KIND.items():
        if current.tags.get(key) != value:
            set_experiment_tag_past_a_race(client, current.experiment_id, key, value)


def set_experiment_tag_past_a_race(
    client: mlflow.MlflowClient, experiment_id: str, key: str, value: str
) -> None:
    """`set_experiment_tag`, tried again once if another worker set it at the same moment.

    MLflow's database store looks the tag up, then inserts it when absent: two SLURM jobs
    starting on a new experiment in PostgreSQL both inserted, and one failed its unique key
    before training anything. The second try finds the row and updates it."""
    try:
        client.set_experiment_tag(experiment_id, key, value)
    except MlflowException as error:
        if not any(text in str(error) for text in DUPLICATE_KEY):
            raise
        client.set_experiment_tag(experiment_id, key, value)


def artifacts_beside(uri: str, experiment: str) -> str | None:
    """Where a new experiment in a SQLite store keeps its artifacts: in the database's
    folder. MLflow's default is ./mlruns of whatever directory the process started in, so
    a store at /tmp/x.db filed its runs' files in the project's mlruns/. Other stores keep
    their server's default (None). Runs have folders of their own, so two names that
    make the same folder name share it harmlessly."""
    if not uri.startswith("sqlite:///"):
        return None
    folder = Path(uri.removeprefix("sqlite:///")).resolve().parent
    return str(folder / "artifacts" / re.sub(r"[^\w.-]+", "_", experiment))


@contextlib.contextmanager
def tracked_run(cfg: DictConfig, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for this config that never stays RUNNING after it leaves."""
    use_store(cfg.tracking.uri, cfg.tracking.experiment)
    name = cfg.tracking.run_name or f"{cell_name(cfg.cell)}-{cfg.task.name}-seed{cfg.seed}"
    resolved = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))  # a mapping
    mlflow.set_system_metrics_sampling_interval(cfg.tracking.system_metrics_seconds)
    run = mlflow.start_run(
        run_name=name,
        parent_run_id=cfg.tracking.parent_run_id,
        tags=owner_tags(),  # from its first moment: a run killed at once is found as well
        log_system_metrics=cfg.tracking.system_metrics,
    )
    try:
        params = {key: str(value)[:MAX_PARAM_LENGTH] for key, value in flatten(resolved).items()}
        mlflow.log_params(params)
        mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), names.CONFIG_FILE)
        mlflow.log_text(installed_packages(), names.ENVIRONMENT_FILE)
        identity = {
            names.CONFIG_HASH: config_hash(cfg),
            names.CELL: cell_name(cfg.cell),
            names.TASK: cfg.task.name,
            names.SEED: str(cfg.seed),
        }
        if cfg.get("experiment_name"):
            identity[names.EXPERIMENT] = cfg.experiment_name
        mlflow.set_tags({**provenance_tags(), **identity, **tags})
        with heartbeat(mlflow.MlflowClient(), run.info.run_id):
            yield run
    except optuna.TrialPruned as pruned:
        # A sweep stopped this trial on purpose: not an error, but not a finished run either.
        mlflow.set_tag(names.PRUNED, str(pruned))
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException as error:
        if interrupted(error):  # Ctrl-C, SIGTERM, or either landing inside a C extension
            mlflow.set_tag(names.FAILURE, "interrupted by the user")
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
            if isinstance(error, KeyboardInterrupt):
                raise
            raise KeyboardInterrupt from error
        mlflow.set_tag(names.FAILURE, f"{type(error).__name__}: {error}"[:MAX_PARAM_LENGTH])
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    else:
        mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))


SPLIT_CONTEXTS = {"train": "training", "validation": "validation", "test": "testing"}


@functools.cache
def profiled_dataset_class() -> type:
    """MLflow's metadata-only dataset with a profile (a user's file: format, content hash,
    rows), which the UI shows beside it. MLflow marks `Dataset.profile` abstract and leaves
    it out of `MetaDataset`; this gives it. Made on first use: `mlflow.data` loads slowly."""
    from mlflow.data.meta_dataset import MetaDataset

    class ProfiledDataset(MetaDataset):
        def __init__(self, source: Any, name: str, digest: str, profile: dict | None) -> None:
            self.facts = profile
            super().__init__(source, name=name, digest=digest)

        @property
        def profile(self) -> dict | None:
            return self.facts

        def to_dict(self) -> dict[str, str]:
            config = super().to_dict()
            if self.facts:
                config["profile"] = json.dumps(self.facts)
            return config

    return ProfiledDataset


def log_datasets(record: DatasetRecord, data_hash: str) -> None:
    """The run's splits as MLflow datasets (name and version, where, the data hash as
    digest, and a user's file's profile), so the UI's dataset column shows what the run saw."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    if record.location:
        with warnings.catch_warnings():  # MLflow registers its local source class twice
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(record.location)
    else:
        source = CodeDatasetSource({"generator": record.name})
    dataset_class = profiled_dataset_class()
    for split, context in SPLIT_CONTEXTS.items():
        dataset = dataset_class(source, f"{record.name} [{split}]", data_hash, record.profile)
        log_input_past_a_race(dataset, context)


# What a store says when a row it was about to insert has just been inserted by another
# client: PostgreSQL, SQLite, MySQL.
DUPLICATE_KEY = ("duplicate key value", "UNIQUE constraint failed", "Duplicate entry")


def log_input_past_a_race(dataset: Dataset, context: str) -> None:
    """`mlflow.log_input`, tried again once if another run created the same dataset at the
    same moment.

    MLflow looks a dataset up and inserts it when absent, in two steps: two workers starting
    on the same data at once can both insert, and the second fails its unique key (seen with
    two SLURM jobs on PostgreSQL). By then the dataset exists, so a second try links it."""
    try:
        mlflow.log_input(dataset, context=context)
    except MlflowException as error:
        if not any(text in str(error) for text in DUPLICATE_KEY):
            raise
        mlflow.log_input(dataset, context=context)


def recurrence_tags(recurrent_layers: Iterable[ProbedRNN]) -> dict[str, str]:
    """How each kind of cell was computed, as MLflow tags: numbers from two machines can
    differ for this reason. `rnnlab.recurrence` is native, graph, native_scan, parallel_scan,
    cudnn or keras (joined by `+` where layers differ), `rnnlab.recurrence.<Cell>` says it per cell
    class; the training pass's route wins over evaluation's."""
    routes: dict[str, str] = {}
    shards = set()
    for layer in recurrent_layers:
        used = layer.recurrence_routes
        route, shard_count = used.get(True) or used.get(False) or ("unused", 0)
        routes.setdefault(type(layer.cell).__name__, route)
        if route in ("native", "graph"):
            shards.add(shard_count)
    if not routes:
        return {}
    tags = {f"{names.RECURRENCE_PREFIX}{cell}": route for cell, route in routes.items()}
    tags[names.RECURRENCE] = "+".join(sorted(set(routes.values())))
    if shards:
        tags[names.RECURRENCE_SHARDS] = ",".join(map(str, sorted(shards)))
    return tags
