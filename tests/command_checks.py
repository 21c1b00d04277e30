"""What the tests of commands share: running `rnnlab` as a user does, and what it left."""

from __future__ import annotations

# A tiny adding run without the probe, stored model or system metrics: a command that is
# fine trains in seconds.
TINY_ADDING = [
    "task=adding",
    "task.max_examples=32",
    "task.length=10",
    "cell.units=4",
    "trainer.epochs=1",
    "trainer.verbose=0",
    "tracking.log_model=false",
    "tracking.system_metrics=false",
    "probe.enabled=false",
]


def rnnlab_command(
    *arguments: str, cwd, env_extra: dict[str, str] | None = None, timeout: int = 600
):
    """`python -m rnnlab.cli ARGUMENTS` in `cwd`, as a user types it: its exit code and output."""
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", *arguments],
        cwd=cwd,
        env={**os.environ, **(env_extra or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def running_runs(uri: str) -> list:
    """The store's runs still RUNNING: none should be, whatever failed."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return [run for run in client.search_runs(experiments) if run.info.status == "RUNNING"]
