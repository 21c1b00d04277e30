"""A 1,000-trial study on 4 workers sharing PostgreSQL: nothing lost, trials per hour, storage.

Creates two fresh databases on the given PostgreSQL server (the Optuna study and the MLflow
store), then runs rnnlab's own worker loop (`rnnlab.sweep.work`) in N processes, as
`rnnlab sweep --workers N` does, on tiny trials (the adding problem, T = 10, 64 examples,
one epoch) so that the sweep machinery, not training, is what is measured. In each worker
every call into Optuna's RDB storage and MLflow's SQL store is timed (the outermost call
on the worker's main thread; the heartbeat thread is apart), and a snapshot is taken as
each trial ends. Afterwards it checks the study against the MLflow runs and prints:
- trials by state, MLflow runs, duplicated or missing runs, runs left RUNNING;
- trials per hour, overall and over the first and last 200 trials (does it slow down?);
- a trial's time, and the share spent in Optuna's storage and in MLflow's store;
- the time of the sweep's report (the parent run's summary) over all the trials.

    .venv/bin/python benchmarks/sweep_scale.py --postgres URL [--trials 1000] [--workers 4]

URL: e.g. what `scripts/local_postgres.sh start DIR` prints.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import psycopg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from store_scale import cpu_model  # noqa: E402 (a sibling script)

from rnnlab.records import names  # noqa: E402

SWEEP_FILE = """\
overrides:
  - task=adding
  - task.length=10
  - task.max_examples=64
  - trainer.epochs=1
  - trainer.batch_size=32
  - trainer.verbose=0
  - trainer.early_stopping_patience=null
  - probe.enabled=false
  - tracking.uri={mlflow}
space:
  cell: [simple_rnn, gru]
  cell.units: {{low: 2, high: 8}}
  optimizer.learning_rate: {{low: 1.0e-3, high: 1.0e-2, log: true}}
n_trials: {trials}
sampler: random
pruner: none
storage: {optuna}
"""


class StorageClock:
    """Seconds spent inside the outermost calls of some classes' methods, main thread only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.depth = threading.local()

    def instrument(self, label: str, cls: type) -> None:
        self.seconds[label] = 0.0
        for name, member in list(vars(cls).items()):
            if inspect.isfunction(member) and not name.startswith("__"):  # not static ones
                setattr(cls, name, self.timed(label, member))

    def timed(self, label: str, method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            depth = getattr(self.depth, "value", 0)
            if depth or threading.current_thread() is not threading.main_thread():
                return method(*args, **kwargs)
            self.depth.value = 1
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                self.depth.value = 0

        return wrapper


def timed_worker(sweep, worker: int, threads: int, out: str) -> None:
    """`experiments.sweep.work` with the storage clock on; a snapshot per finished trial."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from optuna.storages import RDBStorage

    from rnnlab.experiments import sweep as sweep_module

    clock = StorageClock()
    clock.instrument("optuna", RDBStorage)
    clock.instrument("mlflow", SqlAlchemyStore)
    snapshots = []
    progress_line = sweep_module.ProgressLine.__call__

    def snapshot(self, study, trial):
        snapshots.append({"time": time.time(), "trial": trial.number, **clock.seconds})
        if trial.number % 100 == 0:
            progress_line(self, study, trial)

    sweep_module.ProgressLine.__call__ = snapshot
    try:
        sweep_module.work(sweep, worker, threads, f"[worker {worker}] ")
    finally:
        Path(out).write_text(json.dumps(snapshots))


def fresh_database(server_url: str, name: str) -> str:
    """CREATE DATABASE on the server; returns its SQLAlchemy URL."""
    url = make_url(server_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password,
        dbname=url.database, autocommit=True,
    ) as connection:  # fmt: skip
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def run_study(options, folder: Path) -> tuple:
    from mlflow import MlflowClient

    from rnnlab.experiments.study_storage import open_study
    from rnnlab.experiments.sweep import open_parent_run
    from rnnlab.experiments.sweep_file import load_sweep

    optuna_url = fresh_database(options.postgres, "sweep_scale_optuna")
    mlflow_url = fresh_database(options.postgres, "sweep_scale_mlflow")
    path = folder / "sweep_scale.yaml"
    path.write_text(SWEEP_FILE.format(mlflow=mlflow_url, optuna=optuna_url, trials=options.trials))
    sweep = load_sweep(path)
    study = open_study(sweep)
    parent_run_id = open_parent_run(sweep, study)
    threads = max(1, os.cpu_count() // options.workers)
    context = multiprocessing.get_context("spawn")
    outputs = [str(folder / f"worker{worker}.json") for worker in range(options.workers)]
    started = time.time()
    processes = [
        context.Process(target=timed_worker, args=(sweep, worker, threads, outputs[worker]))
        for worker in range(options.workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    wall = time.time() - started
    snapshots = [json.loads(Path(out).read_text()) for out in outputs]
    client = MlflowClient(mlflow_url)
    report_started = time.perf_counter()
    from rnnlab.reports.sweep_report import report

    report(study, sweep, client, parent_run_id, folder)
    report_seconds = time.perf_counter() - report_started
    return sweep, study, client, snapshots, wall, report_seconds


def cycles(snapshots: list[list[dict]]) -> list[dict]:
    """Per finished trial: its worker's seconds since the previous one, and the storage's."""
    rows = []
    for worker in snapshots:
        for before, after in zip(worker, worker[1:], strict=False):
            rows.append(
                {
                    "end": after["time"],
                    "seconds": after["time"] - before["time"],
                    "optuna": after["optuna"] - before["optuna"],
                    "mlflow": after["mlflow"] - before["mlflow"],
                }
            )
    return sorted(rows, key=lambda row: row["end"])


def summary(rows: list[dict]) -> str:
    seconds = statistics.median(row["seconds"] for row in rows)
    optuna = statistics.median(row["optuna"] for row in rows)
    mlflow = statistics.median(row["mlflow"] for row in rows)
    rate = 3600 * (len(rows) - 1) / (rows[-1]["end"] - rows[0]["end"])
    return (
        f"{rate:,.0f} trials/h; median trial {seconds:.2f} s, of it Optuna's storage "
        f"{1000 * optuna:.0f} ms ({optuna / seconds:.1%}), MLflow's store "
        f"{1000 * mlflow:.0f} ms ({mlflow / seconds:.1%})"
    )


def check(study, client) -> list[str]:
    """States, and every trial against its MLflow run: lost, duplicated, left RUNNING."""
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for trial in trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiments, f"tags.`{names.OPTUNA_STUDY}` = '{study.study_name}'", max_results=1000,
            page_token=token,
        )  # fmt: skip
        runs += page
        token = page.token
        if not token:
            break
    numbers = [int(run.data.tags[names.OPTUNA_TRIAL]) for run in runs]
    running = [run for run in runs if run.info.status == "RUNNING"]
    return [
        f"trials: {len(trials)} {states}",
        f"MLflow runs: {len(runs)}; trials with two runs: {len(numbers) - len(set(numbers))}; "
        f"trials without a run: {len({t.number for t in trials} - set(numbers))}; "
        f"runs left RUNNING: {len(running)}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", required=True, help="a PostgreSQL server's URL")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        _, study, client, snapshots, wall, report_seconds = run_study(options, Path(name))
    rows = cycles(snapshots)
    window = min(200, len(rows) // 2)
    print(f"\nCPU: {cpu_model()}; {options.workers} workers, {options.trials} trials\n")
    for line in check(study, client):
        print(line)
    print(f"wall time {wall:.0f} s: {3600 * options.trials / wall:,.0f} trials/h")
    print(f"all trials:      {summary(rows)}")
    print(f"first {window} ended: {summary(rows[:window])}")
    print(f"last {window} ended:  {summary(rows[-window:])}")
    print(f"the sweep's report over {options.trials} trials: {report_seconds:.1f} s")


if __name__ == "__main__":
    main()
