"""Workers as SLURM jobs: `--launcher slurm` for `rnnlab sweep` and `rnnlab paper`.

Each job runs one worker loop (a sweep's or a grid's), submitted through submitit, so the
cluster's own scheduler decides where and when; rnnlab schedules nothing itself. Jobs
coordinate as local workers do, through the study's or the grid's database, which must be
one every node reaches (PostgreSQL on a real cluster; SQLite on a shared disk only for a
single node). A job that is cancelled, preempted or runs out of time dies like a killed
worker: its trial or point is failed and run again by a live job, or by the next run of
the same command.

The command waits for its jobs through `squeue`, not `sacct`: clusters without
accounting (like the local test cluster, scripts/local_slurm.sh) have no `sacct`.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from rnnlab.config import ConfigError

LOGS = Path("logs") / "slurm"  # each job's stdout and stderr: logs/slurm/<name>/<job id>_0_log.*
POLL_SECONDS = 2.0


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


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags `rnnlab sweep` and `rnnlab paper` share for where their workers run."""
    parser.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default=None,
        help="local: processes on this machine (default); slurm: one SLURM job per worker",
    )
    for field in fields(SlurmOptions):
        flag = "--" + field.name.replace("_", "-")
        kind = str if field.name in ("partition", "logs") else int
        parser.add_argument(flag, type=kind, default=None, help=f"slurm: {field.name}")


def slurm_options_from(options: argparse.Namespace, base: dict | None = None) -> SlurmOptions:
    """The sweep file's `slurm:` section (if any), with the command line's flags over it."""
    values = dict(base or {})
    for field in fields(SlurmOptions):
        given = getattr(options, field.name, None)
        if given is not None:
            values[field.name] = given
    return SlurmOptions.from_mapping(values, "command line")


class SlurmLauncher:
    """Submit `jobs` workers, report where they log, and wait until none is queued."""

    def __init__(self, options: SlurmOptions, name: str) -> None:
        self.options = options
        self.name = name

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
