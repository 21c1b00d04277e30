"""Reports and resumes against big MLflow stores: 1,000 and 10,000 finished runs.

Fills a store through MLflow's own API with finished runs shaped like rnnlab's (30 params,
25 metric values, 13 tags, all tagged `rnnlab.experiment=smoke`); the smoke grid's 8
points are among them with their real config hashes and scores, the rest belong to other
versions of the grid. Then times, each in a fresh process as a user would run them:
- the resume decision: `rnnlab paper smoke` with every point finished (nothing to train);
- `rnnlab report smoke`: the table, the figures and the report run;
- the store query alone (`finished_runs`) and MLflow's `search_runs` over the same runs.

Targets (issue 18): the report in at most 10 s and the resume decision in at most 5 s at
10,000 runs. The SQLite store is kept in --folder and grows from one size to the next;
--postgres URL fills and measures a PostgreSQL store the same way.

    .venv/bin/python benchmarks/store_scale.py --runs 1000 10000 [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402

from rnnlab.config import PROJECT_ROOT  # noqa: E402
from rnnlab.experiments.grids import grid_facts  # noqa: E402
from rnnlab.records import names  # noqa: E402
from rnnlab.records.runs import finished_runs  # noqa: E402

EXPERIMENT = "smoke"


def run_shape(config_hash: str, seed: int, task: str, cell: str, score: float):
    """30 params, 25 metric values (8 epochs of 3 metrics and a test score) and 13 tags."""
    now = int(time.time() * 1000)
    params = [Param(f"group{i // 10}.key{i}", str(random.random())) for i in range(30)]
    metrics = [
        Metric(name, random.random(), now, epoch)
        for epoch in range(8)
        for name in ("loss", "val_loss", "epoch_seconds")
    ]
    metrics.append(Metric("test_loss", score, now, 0))
    tags = {
        names.EXPERIMENT: EXPERIMENT,
        names.CONFIG_HASH: config_hash,
        names.SEED: str(seed),
        names.TASK: task,
        names.CELL: cell,
        names.GIT_COMMIT: uuid.uuid4().hex,
        names.VERSION: "0.1.0",
        names.DATA_HASH: uuid.uuid4().hex[:16],
        names.CPU: "AMD EPYC",
        names.NATIVE: "on",
        names.TENSORFLOW_VERSION: "2.21.0",
        names.KERAS_VERSION: "3.13.0",
        "mlflow.runName": f"{cell}-{task}-seed{seed}",
    }
    return params, metrics, [RunTag(key, value) for key, value in tags.items()]


def fill(uri: str, runs: int) -> None:
    """Bring the store up to `runs` finished runs of the experiment (kept between calls)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench") or client.get_experiment(
        client.create_experiment("bench")
    )
    have = len(finished_runs(uri, EXPERIMENT))
    points = [facts for _, facts in grid_facts(EXPERIMENT, [f"tracking.uri={uri}"])]
    started = time.perf_counter()
    for number in range(have, runs):
        if number < len(points):  # the current grid, with real hashes
            facts = points[number]
            shape = run_shape(facts.config_hash, number % 2, facts.task, facts.cell, 1.0 + number)
        else:  # runs of older versions of the grid
            shape = run_shape(uuid.uuid4().hex[:16], number % 3, "adding", "lstm", random.random())
        params, metrics, tags = shape
        run = client.create_run(experiment.experiment_id, tags={t.key: t.value for t in tags})
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        client.set_terminated(run.info.run_id, "FINISHED")
        if (number + 1) % 1000 == 0:
            rate = (number + 1 - have) / (time.perf_counter() - started)
            print(f"  {number + 1} runs in the store ({rate:.0f} runs/s)", flush=True)


def timed(command: list[str], cache: str | None = None) -> float:
    """Wall seconds of a fresh process; `cache`: its grid cache folder (empty: a cold one)."""
    env = {**os.environ, **({"XDG_CACHE_HOME": cache} if cache else {})}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return time.perf_counter() - started


def measure(uri: str) -> dict[str, float]:
    rnnlab = [sys.executable, "-m", "rnnlab.cli"]
    uri_override = f"tracking.uri={uri}"
    query = f"from rnnlab.records.runs import finished_runs; finished_runs('{uri}', '{EXPERIMENT}')"
    search = (
        f"from mlflow import MlflowClient; c = MlflowClient('{uri}'); "
        "c.search_runs([e.experiment_id for e in c.search_experiments()], "
        f"\"tags.`{names.EXPERIMENT}` = '{EXPERIMENT}' and attributes.status = 'FINISHED'\", "
        "max_results=50000)"
    )
    paper = [*rnnlab, "paper", EXPERIMENT, uri_override, "--no-report"]
    with tempfile.TemporaryDirectory() as cold:
        cold_paper = timed(paper, cache=cold)
    return {
        "resume decision (rnnlab paper, nothing left), grid cache cold": cold_paper,
        "resume decision, grid cache warm": timed(paper),
        "rnnlab report": timed([*rnnlab, "report", EXPERIMENT, uri_override]),
        "store query (finished_runs)": timed([sys.executable, "-c", query]),
        "MLflow search_runs, same runs": timed([sys.executable, "-c", search]),
        "python + import mlflow alone": timed([sys.executable, "-c", "import mlflow"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/rnnlab-store-scale"))
    parser.add_argument("--postgres", help="a PostgreSQL URL to fill and measure as well")
    options = parser.parse_args()
    options.folder.mkdir(parents=True, exist_ok=True)
    stores = {"SQLite": f"sqlite:///{options.folder}/store.db"}
    if options.postgres:
        stores["PostgreSQL"] = options.postgres
    results = {}
    for label, uri in stores.items():
        for runs in sorted(options.runs):  # each store grows from one size to the next
            print(f"{label}: filling to {runs} runs ({uri})", flush=True)
            fill(uri, runs)
            results[(label, runs)] = measure(uri)
    print(f"\nCPU: {cpu_model()}\n")
    columns = list(results)
    print("| seconds | " + " | ".join(f"{label}, {runs:,} runs" for label, runs in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for measure_name in next(iter(results.values())):
        cells = [f"{results[column][measure_name]:.1f}" for column in columns]
        print(f"| {measure_name} | " + " | ".join(cells) + " |")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
