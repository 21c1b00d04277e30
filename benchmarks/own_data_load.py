"""Loading a user's large series file: rnnlab against pandas/pyarrow reading it alone.

Writes a 1,000,000-row long-form series file (`split,series,step,<3 channels>,label`:
10,000 series of 100 steps, 8 classes) as CSV and as Parquet, then, each in a fresh process
so that one measurement's memory is not another's:
- pandas alone: `pd.read_csv(engine="pyarrow")` or `pd.read_parquet`, the floor;
- rnnlab's first load: read, check, group by series, split, standardise and write the cache
  (`series_classification_files.prepared`, what `rnnlab train` does before TensorFlow);
- rnnlab's second load: the same call, now reading the cache.

Each process reports its seconds (wall clock, and CPU time over all its threads: steadier
on a shared machine) and its peak memory above what it held after its imports (the
kernel's high-water mark, VmHWM, which sees pyarrow's allocations as tracemalloc cannot).
Targets (issue 45): the first load within about 2x pandas's read time, and its peak within
about 3x the data's in-memory size (the DataFrame's `memory_usage(deep=True)`).

    .venv/bin/python benchmarks/own_data_load.py [--rows 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SERIES_STEPS = 100  # steps per series: rows / 100 series
CHANNELS = ("accel_x", "accel_y", "gyro")
CLASSES = 8

# What a measuring process runs: `{kind}` is pandas, first or cached.
MEASURE = """
import json, sys, time
from pathlib import Path
import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from rnnlab.tasks import series_classification_files as files

def resident(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
path, kind, data_dir = sys.argv[1], sys.argv[2], sys.argv[3]
task = OmegaConf.create({"source": "file:" + path, "validation_fraction": 0.2,
                         "test_fraction": 0.2, "nonfinite": "fail"})
before = resident("VmRSS")
started, cpu_started = time.perf_counter(), time.process_time()
if kind == "pandas":
    if path.endswith(".parquet"):
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path, engine="pyarrow")
else:
    files.prepared(task, data_dir)
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
peak = resident("VmHWM") - before
size = int(table.memory_usage(deep=True).sum()) if kind == "pandas" else 0
print(json.dumps({"seconds": seconds, "cpu": cpu, "peak": peak, "size": size}))
"""


def write_files(folder: Path, rows: int) -> dict[str, Path]:
    """The same long table as CSV and Parquet; rows of a series together, as exports are."""
    import pandas as pd

    rng = np.random.default_rng(0)
    count = rows // SERIES_STEPS
    labels = rng.integers(0, CLASSES, count)
    series = np.repeat(np.arange(count), SERIES_STEPS)
    table = pd.DataFrame(
        {
            "split": np.where(series < count * 0.8, "train", "test"),
            "series": series,
            "step": np.tile(np.arange(SERIES_STEPS), count),
            **{
                name: rng.normal(size=len(series)) + labels[series] * 0.1 * index
                for index, name in enumerate(CHANNELS)
            },
            "label": np.array([f"class_{label}" for label in range(CLASSES)])[labels[series]],
        }
    )
    paths = {"CSV": folder / "series.csv", "Parquet": folder / "series.parquet"}
    table.to_csv(paths["CSV"], index=False)
    table.to_parquet(paths["Parquet"])
    return paths


def measure(path: Path, kind: str, data_dir: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), kind, str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per measurement")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        paths = write_files(folder, options.rows)
        shape = f"{options.rows // SERIES_STEPS:,} series of {SERIES_STEPS} steps"
        print(
            f"{options.rows:,} rows, {shape}, {len(CHANNELS)} channels; "
            f"median of {options.repeats} fresh processes"
        )
        header = f"{'file':<8} {'MB':>6} {'reader':<14} {'seconds':>8} {'x pandas':>9} "
        print(header + f"{'CPU s':>7} {'x pandas':>9} {'peak MB':>8} {'x data':>7}")
        for name, path in paths.items():
            results: dict[str, list[dict[str, float]]] = {"pandas": [], "first": [], "cached": []}
            for repeat in range(options.repeats):
                data_dir = folder / f"data-{name}-{repeat}"  # a first load finds no cache
                for kind in results:
                    results[kind].append(measure(path, kind, data_dir))
            median = {
                kind: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                for kind, runs in results.items()
            }
            size = median["pandas"]["size"]
            labels = {"pandas": "pandas alone", "first": "rnnlab first", "cached": "rnnlab cached"}
            floor = median["pandas"]
            for kind, label in labels.items():
                seconds, cpu, peak = (median[kind][key] for key in ("seconds", "cpu", "peak"))
                print(
                    f"{name:<8} {path.stat().st_size / 1e6:>6.0f} {label:<14} {seconds:>8.2f} "
                    f"{seconds / floor['seconds']:>9.2f} {cpu:>7.2f} {cpu / floor['cpu']:>9.2f} "
                    f"{peak / 1e6:>8.0f} {peak / size:>7.2f}"
                )
        print(f"data in memory (pandas DataFrame, deep): {size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
