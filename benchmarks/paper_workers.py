"""What a second worker buys a paper grid: `rnnlab paper EXP --workers N`, wall time.

Runs the whole command (as `make paper EXP=smoke WORKERS=N` does, without the report) into
a fresh store each time, alternating the worker counts so both see the same machine
noise, and reports each count's median wall time and the ratio of medians.

    make bench   # or: .venv/bin/python benchmarks/paper_workers.py --experiment smoke --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rnnlab.recurrence.native.build import this_cpu


def timed_grid(experiment: str, workers: int, folder: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", "paper", experiment, "--no-report",
         "--workers", str(workers), f"tracking.uri=sqlite:///{folder}/mlflow.db"],
        cwd=folder, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="smoke")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    times: dict[int, list[float]] = {workers: [] for workers in options.workers}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(options.repeats):
            for workers in options.workers:
                folder = Path(scratch) / f"{workers}-{repeat}"
                folder.mkdir()
                times[workers].append(timed_grid(options.experiment, workers, folder))
                print(
                    f"repeat {repeat}: {workers} worker(s) {times[workers][-1]:.1f} s", flush=True
                )
    print(f"\n`rnnlab paper {options.experiment}` on {this_cpu().model}")
    print("| workers | median wall time | runs | against 1 worker |")
    print("|---|---|---|---|")
    base = statistics.median(times[options.workers[0]])
    for workers, values in times.items():
        median = statistics.median(values)
        spread = ", ".join(f"{value:.0f}" for value in values)
        print(f"| {workers} | {median:.1f} s | {spread} | {base / median:.2f}× |")


if __name__ == "__main__":
    main()
