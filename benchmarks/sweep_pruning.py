"""What pruning buys a sweep, what a second worker buys, and what a trial costs outside `fit`.

Runs sweeps/sentiment_cells.yaml three times into a throwaway store: with its own pruner
and without (same seed, same trial count), then without pruning on 2 workers. Reports the
wall-time ratio and both best validation scores, and trials per hour with 1 and 2 workers.
Then two default trials on the full data measure the share of a trial's time spent outside
`model.fit` (config, data, model, MLflow, Optuna).

    make bench   # or: .venv/bin/python benchmarks/sweep_pruning.py --trials 30 --max-examples 2000
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from rnnlab.sweep import sweep  # noqa: E402
from rnnlab.sweep_file import load_sweep  # noqa: E402


class FitClock:
    """Adds up the wall time spent inside keras.Model.fit, for the per-trial overhead."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._fit = keras.Model.fit

    def __enter__(self) -> FitClock:
        clock, fit = self, self._fit

        def timed_fit(model, *args, **kwargs):
            started = time.perf_counter()
            try:
                return fit(model, *args, **kwargs)
            finally:
                clock.seconds += time.perf_counter() - started

        keras.Model.fit = timed_fit
        return self

    def __exit__(self, *exc) -> None:
        keras.Model.fit = self._fit


def timed_sweep(name: str, arguments, folder: Path, pruner: str | None, trials: int, workers: int):
    """One sweep; pruner None keeps the sweep file's own."""
    spec = load_sweep("sentiment_cells", [*arguments, f"tracking.uri=sqlite:///{folder}/ml.db"])
    storage = f"sqlite:///{folder}/optuna.db"
    spec = dataclasses.replace(spec, name=name, n_trials=trials, storage=storage)
    if pruner is not None:
        spec = dataclasses.replace(spec, pruner=pruner, pruner_options={})
    with FitClock() as clock:
        started = time.perf_counter()
        study = sweep(spec, workers=workers, best_folder=folder)
        wall = time.perf_counter() - started
    trials = study.get_trials()
    trial_seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    return {
        "wall": wall,
        "best": study.best_value,
        "trials": len(trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "trial_seconds": sum(trial_seconds),
        "median_trial": statistics.median(trial_seconds),
        "fit_seconds": clock.seconds,  # only measurable in-process (1 worker)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="the sweep file's own count")
    parser.add_argument("--max-examples", type=int, default=2000, help="cap per split")
    parser.add_argument("--default-trials", type=int, default=2, help="full-data trials")
    options = parser.parse_args()
    arguments = [f"task.max_examples={options.max_examples}"]
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        # Untimed: creates the stores and loads TensorFlow and the data once for all.
        timed_sweep("bench_warm_up", arguments, folder, "none", trials=1, workers=1)
        runs = {}
        for label, pruner, workers in [
            ("pruned", None, 1),
            ("unpruned", "none", 1),
            ("unpruned, 2 workers", "none", 2),
        ]:
            study = f"bench_{pruner or 'file'}_{workers}"  # None: the file's own pruner
            runs[label] = timed_sweep(study, arguments, folder, pruner, options.trials, workers)
        full = timed_sweep("bench_default", [], folder, "none", options.default_trials, 1)
    pruned, unpruned, two = runs["pruned"], runs["unpruned"], runs["unpruned, 2 workers"]
    print(f"\n{options.trials} trials of sentiment_cells, {' '.join(arguments)}, seed 0\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| wall time, the file's pruner | {pruned['wall']:.0f} s ({pruned['pruned']} pruned) |")
    print(f"| wall time, no pruner | {unpruned['wall']:.0f} s |")
    print(f"| ratio pruned / unpruned | {pruned['wall'] / unpruned['wall']:.2f} |")
    print(f"| best val_accuracy, pruned | {pruned['best']:.4f} |")
    print(f"| best val_accuracy, unpruned | {unpruned['best']:.4f} |")
    for label, result in [("1 worker", unpruned), ("2 workers", two)]:
        per_hour = 3600 * result["trials"] / result["wall"]
        print(f"| trials per hour, {label} (no pruner) | {per_hour:.0f} |")
    for label, result in [("capped data", unpruned), ("full data, default trial", full)]:
        overhead = 1 - result["fit_seconds"] / result["trial_seconds"]
        print(
            f"| time outside fit, {label} | {overhead:.1%} "
            f"(median trial {result['median_trial']:.1f} s) |"
        )


if __name__ == "__main__":
    main()
