"""What pruning buys a sweep, what a second worker buys, and what a trial costs outside `fit`.

Runs sweeps/sentiment_cells.yaml three times into a throwaway store: with its median pruner
and without (same seed, same trial count), then without pruning on 2 workers. Reports the
wall-time ratio and both best validation scores, trials per hour with 1 and 2 workers, and
the share of a trial's time spent outside `model.fit` (config, data, model, MLflow, Optuna).

    make bench   # or: .venv/bin/python benchmarks/sweep_pruning.py --trials 12 --max-examples 2000
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


def timed_sweep(name: str, arguments, folder: Path, pruner: str, trials: int, workers: int):
    spec = load_sweep("sentiment_cells", [*arguments, f"tracking.uri=sqlite:///{folder}/ml.db"])
    storage = f"sqlite:///{folder}/optuna.db"
    spec = dataclasses.replace(spec, name=name, pruner=pruner, n_trials=trials, storage=storage)
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
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--max-examples", type=int, default=2000, help="cap per split")
    parser.add_argument("--epochs", type=int, default=5)
    options = parser.parse_args()
    arguments = [
        f"task.max_examples={options.max_examples}",
        f"trainer.epochs={options.epochs}",
    ]
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        # Untimed: creates the stores and loads TensorFlow and the data once for all.
        timed_sweep("bench_warm_up", arguments, folder, "none", trials=1, workers=1)
        runs = {}
        for label, pruner, workers in [
            ("pruned", "median", 1),
            ("unpruned", "none", 1),
            ("unpruned, 2 workers", "none", 2),
        ]:
            study = f"bench_{pruner}_{workers}"
            runs[label] = timed_sweep(study, arguments, folder, pruner, options.trials, workers)
    pruned, unpruned, two = runs["pruned"], runs["unpruned"], runs["unpruned, 2 workers"]
    print(f"\n{options.trials} trials of sentiment_cells, {' '.join(arguments)}, seed 0\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| wall time, median pruner | {pruned['wall']:.0f} s ({pruned['pruned']} pruned) |")
    print(f"| wall time, no pruner | {unpruned['wall']:.0f} s |")
    print(f"| ratio pruned / unpruned | {pruned['wall'] / unpruned['wall']:.2f} |")
    print(f"| best val_accuracy, pruned | {pruned['best']:.4f} |")
    print(f"| best val_accuracy, unpruned | {unpruned['best']:.4f} |")
    for label, result in [("1 worker", unpruned), ("2 workers", two)]:
        per_hour = 3600 * result["trials"] / result["wall"]
        print(f"| trials per hour, {label} (no pruner) | {per_hour:.0f} |")
    overhead = 1 - unpruned["fit_seconds"] / unpruned["trial_seconds"]
    print(
        f"| time outside fit, share of a trial (no pruner) | {overhead:.1%} "
        f"(median trial {unpruned['median_trial']:.1f} s) |"
    )


if __name__ == "__main__":
    main()
