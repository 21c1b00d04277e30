"""Where a command's workers run: a `Launcher` per place, one table from name to launcher.

`rnnlab sweep` and `rnnlab paper` both hand a worker loop to a launcher and wait for it;
neither knows where the workers run. `local` starts processes on this machine (workers.py);
`slurm` submits one SLURM job per worker through submitit, so the cluster's own scheduler
decides where and when: rnnlab schedules nothing itself. Adding a place is one class with a
`run` method and one entry in LAUNCHERS (and its name is accepted by the command line and
by a sweep file's `launcher:` key, which read the table).

Workers coordinate through the study's or the grid's database, wherever they run, so SLURM
jobs need one that every node reaches (PostgreSQL on a real cluster; SQLite on a shared disk
only for a single node). A job that is cancelled, preempted or runs out of time dies like a
killed worker: its trial or point is failed and run again by a live job, or by the next run
of the same command.

The slurm launcher waits for its jobs through `squeue`, not `sacct`: clusters without
accounting (like the local test cluster, scripts/local_slurm.sh) have no `sacct`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from rnnlab.config import ConfigError

LOGS = Path("logs") / "slurm"  # each job's stdout and stderr: logs/slurm/<name>/<job id>_0_log.*
POLL_SECONDS = 2.0
CONTROLLER_SECONDS = 10.0  # a controller answers sinfo in well under a second


class Launcher(Protocol):
    """Runs a command's workers somewhere and waits until all have ended.

    `target(*args, worker=, threads=, label=)` is one worker's loop: `worker` numbers it (a
    sweep seeds its sampler with it), `threads` is its share of the cores (None: all of
    them), `label` prefixes its printed lines. Problems come back as one line per worker
    that died, so the command can say what to rerun instead of raising on the first.
    """

    def run(self, target: Callable[..., None], args: tuple, workers: int) -> list[str]: ...


class LocalLauncher:
    """Worker processes on this machine; a single worker runs in this process.

    In this process, one worker keeps its errors as tracebacks and costs no second
    TensorFlow start-up; several get a fresh process each (workers.py).
    """

    def __init__(self, settings: dict[str, Any], name: str) -> None:
        del settings, name  # nothing to ask of this machine

    def run(self, target: Callable[..., None], args: tuple, workers: int) -> list[str]:
        if workers == 1:
            target(*args)
            return []
        from rnnlab.experiments.workers import run_workers

        return run_workers(target, args, workers)


@dataclass(frozen=True)
class SlurmOptions:
    """What a job asks the cluster for. Every field is a `--<name>` flag (dashes for
    underscores) and a key of a sweep file's `slurm:` section."""

    partition: str | None = None
    time_minutes: int = 60
    cpus_per_task: int = 1
    gpus_per_task: int = 0
    jobs: int | None = None  # default: --workers
    logs: str = str(LOGS)

    @classmethod
    def from_mapping(cls, values: dict, source: str) -> SlurmOptions:
        known = {field.name for field in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(
                f"{source}: unknown slurm option(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        options = cls(**values)
        for name in ("time_minutes", "cpus_per_task", "jobs"):
            value = getattr(options, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{source}: slurm {name} must be a positive integer, got {value}")
        return options


class SlurmLauncher:
    """Submit `jobs` workers, report where they log, and wait until none is queued.

    `settings` are SlurmOptions' fields (a sweep file's `slurm:` section with the command
    line's flags over it), checked only here: a local run ignores them.
    """

    def __init__(self, settings: dict[str, Any], name: str) -> None:
        self.options = SlurmOptions.from_mapping(settings, "command line")
        self.name = name
        # Checked before the command makes its study or grid: without it, those were made
        # and then the submission failed.
        if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
            raise ConfigError("--launcher slurm needs SLURM's sbatch and sinfo on PATH")
        try:
            answer = subprocess.run(
                ["sinfo", "--noheader"], capture_output=True, text=True, timeout=CONTROLLER_SECONDS
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(
                f"--launcher slurm: SLURM's controller did not answer sinfo in "
                f"{CONTROLLER_SECONDS:g} s"
            ) from None
        if answer.returncode != 0:
            last = (answer.stderr.strip().splitlines() or ["no reason given"])[-1]
            raise ConfigError(f"--launcher slurm: sinfo cannot reach the controller: {last}")

    def executor(self):
        import submitit

        executor = submitit.SlurmExecutor(folder=Path(self.options.logs) / self.name / "%j")
        parameters = {
            "time": self.options.time_minutes,
            "cpus_per_task": self.options.cpus_per_task,
            "job_name": f"rnnlab-{self.name}",
        }
        if self.options.partition:
            parameters["partition"] = self.options.partition
        if self.options.gpus_per_task:
            parameters["gpus_per_task"] = self.options.gpus_per_task
        executor.update_parameters(**parameters)
        return executor

    def run(self, target: Callable, args: tuple, workers: int) -> list[str]:
        """Run `target(*args, worker=, threads=, label=)` as jobs; a line per job that failed."""
        count = self.options.jobs or workers
        executor = self.executor()
        threads = self.options.cpus_per_task
        try:
            jobs = [
                executor.submit(target, *args, worker=i, threads=threads, label=f"[job {i}] ")
                for i in range(count)
            ]
        except Exception as error:  # sbatch missing or refused: one line, not a traceback
            raise ConfigError(f"SLURM did not take the jobs: {str(error).strip()[:300]}") from None
        for job in jobs:
            print(f"SLURM job {job.job_id}: log {job.paths.stdout}", flush=True)
        wait_until_dequeued([job.job_id for job in jobs])
        return [problem for job in jobs if (problem := job_problem(job))]


# The one place a launcher is named: the command line's --launcher and a sweep file's
# `launcher:` accept exactly these keys.
LAUNCHERS: dict[str, Callable[[dict[str, Any], str], Launcher]] = {
    "local": LocalLauncher,
    "slurm": SlurmLauncher,
}


def launcher_for(kind: str, settings: dict[str, Any], name: str) -> Launcher:
    """The launcher named `kind`; `name` names its jobs and log folder (`sweep-<study>`)."""
    return LAUNCHERS[kind](settings, name)


def queued_jobs() -> set[str]:
    listing = subprocess.run(
        ["squeue", "--noheader", "--format=%i"], capture_output=True, text=True, check=False
    )
    return set(listing.stdout.split())


def wait_until_dequeued(job_ids: list[str]) -> None:
    while queued_jobs() & set(job_ids):
        time.sleep(POLL_SECONDS)


def job_problem(job) -> str | None:
    """None for a job that returned; otherwise why not, in one line."""
    if not job.paths.result_pickle.exists():
        return (
            f"SLURM job {job.job_id} ended without a result (cancelled, preempted or out of "
            f"time): see {job.paths.stderr}"
        )
    try:
        job.result()
    except Exception as error:
        last = str(error).strip().splitlines()[-1:] or ["failed"]
        return f"SLURM job {job.job_id} failed: {last[0][:300]}"
    return None
