"""What MLflow's system metrics cost a training run: epoch times with and without them,
and the CPU time of one sample.

Trains the default run (an LSTM on sentiment, the full data) with system metrics off, on at
the shipped 10 s interval, and on at 1 s, one run of each per round, rounds interleaved so
that the machine's fast and slow modes fall on all three. Each run's first epoch (tracing)
is left out; the median of the rest is compared with the runs without system metrics.
Epoch times are noisy at the 1% level, so it also times what the monitor thread does per
sample (read CPU, memory, disk and network, check the run is live, log the values) on this
thread's CPU clock: that over the interval is its share of one core.

    .venv/bin/python benchmarks/system_metrics_cost.py [--rounds 4] [--epochs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rnnlab.config import compose_config  # noqa: E402
from rnnlab.training.callbacks import MlflowEpochLogger  # noqa: E402
from rnnlab.training.run import run  # noqa: E402


def cpu_seconds_per_sample(uri: str, run_id: str, samples: int = 50) -> float:
    """Thread CPU time of one monitor cycle, the way MLflow's monitor thread runs it."""
    from mlflow import MlflowClient
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, tracking_uri=uri)
    client = MlflowClient(uri)
    started = time.thread_time()
    for _ in range(samples):
        monitor.collect_metrics()
        client.get_run(run_id)
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
    return (time.thread_time() - started) / samples


def remember_the_last_logger() -> None:
    """MlflowEpochLogger.last: the logger of the latest run, with its epochs' seconds."""
    original = MlflowEpochLogger.__init__

    def init(self) -> None:
        original(self)
        MlflowEpochLogger.last = self

    MlflowEpochLogger.__init__ = init


CONTENDERS = {
    "off": ["tracking.system_metrics=false"],
    "on, every 10 s (shipped)": ["tracking.system_metrics=true"],
    "on, every 1 s": ["tracking.system_metrics=true", "tracking.system_metrics_seconds=1"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5, help="per run, the first one untimed")
    options = parser.parse_args()
    remember_the_last_logger()
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        common = [
            f"tracking.uri={uri}",
            f"trainer.epochs={options.epochs}",
            "trainer.early_stopping_patience=null",
            "trainer.verbose=0",
            "tracking.log_model=false",
        ]
        epochs: dict[str, list[float]] = {label: [] for label in CONTENDERS}
        for round_number in range(options.rounds):
            for label, overrides in CONTENDERS.items():
                result = run(compose_config([*common, *overrides]))
                timed = MlflowEpochLogger.last.epoch_seconds[1:]
                epochs[label] += timed
                shown = ", ".join(f"{seconds:.2f}" for seconds in timed)
                print(f"round {round_number + 1}, system metrics {label}: {shown}", flush=True)
        sample = cpu_seconds_per_sample(uri, result.run_id)
    baseline = statistics.median(epochs["off"])
    print(f"\n{options.rounds} rounds, {options.epochs - 1} timed epochs per run\n")
    print("| system metrics | epochs timed | median epoch | ratio to off |")
    print("|---|---|---|---|")
    for label, seconds in epochs.items():
        median = statistics.median(seconds)
        print(f"| {label} | {len(seconds)} | {median:.3f} s | {median / baseline:.3f} |")
    print(
        f"\none sample: {1000 * sample:.1f} ms of CPU; every 10 s that is "
        f"{sample / 10:.3%} of one core, every 1 s {sample:.2%}"
    )


if __name__ == "__main__":
    main()
