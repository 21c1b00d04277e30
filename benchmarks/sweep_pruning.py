"""What pruning buys a sweep, what a second worker buys, and what a trial costs outside `fit`.

Runs sweeps/sentiment_cells.yaml as shipped (full data) into a throwaway store: with its
own pruner and without (same seed, same trial count, alternating in blocks), then without
pruning on 2 workers. Reports the wall-time ratio and both best validation scores, trials
per hour with 1 and 2 workers, and the share of a full trial's time spent outside
`model.fit` (config, model, MLflow, Optuna; a worker loads the data once, before).

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

from rnnlab.cli import sweep_and_report  # noqa: E402
from rnnlab.experiments.sweep_file import load_sweep  # noqa: E402


class FitClock:
    """The wall time of every keras.Model.fit call in order, for the per-trial overhead."""

    def __init__(self) -> None:
        self.fits: list[float] = []
        self._fit = keras.Model.fit

    def __enter__(self) -> FitClock:
        clock, fit = self, self._fit

        def timed_fit(model, *args, **kwargs):
            started = time.perf_counter()
            try:
                return fit(model, *args, **kwargs)
            finally:
                clock.fits.append(time.perf_counter() - started)

        keras.Model.fit = timed_fit
        return self

    def __exit__(self, *exc) -> None:
        keras.Model.fit = self._fit


def timed_sweep(
    name: str, arguments, folder: Path, pruner: str | None, trials: int, workers: int, seed=0
):
    """One sweep; pruner None keeps the sweep file's own; `seed` is the sampler's."""
    spec = load_sweep("sentiment_cells", [*arguments, f"tracking.uri=sqlite:///{folder}/ml.db"])
    storage = f"sqlite:///{folder}/optuna.db"
    spec = dataclasses.replace(spec, name=name, n_trials=trials, storage=storage, seed=seed)
    if pruner is not None:
        spec = dataclasses.replace(spec, pruner=pruner, pruner_options={})
    with FitClock() as clock:
        started = time.perf_counter()
        study = sweep_and_report(spec, workers=workers, best_folder=folder)
        wall = time.perf_counter() - started
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    trial_seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    # Only measurable in-process (1 worker): the share of each of this call's trials (the
    # last ones: a resumed study holds the earlier ones too) spent outside `fit`.
    ran_here = trial_seconds[len(trial_seconds) - len(clock.fits) :]
    outside = [1 - fit / total for fit, total in zip(clock.fits, ran_here)]
    return {
        "wall": wall,
        # A block can end with no trial complete yet (all pruned): no best so far.
        "best": max((t.value for t in trials if t.state == TrialState.COMPLETE), default=None),
        "trials": len(trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "median_trial": statistics.median(trial_seconds),
        "outside_fit": outside,
    }


def combined(blocks: list[dict]) -> dict:
    """One study run in blocks (resumed): wall times and overheads add up, the last has all."""
    return {
        **blocks[-1],
        "wall": sum(block["wall"] for block in blocks),
        "outside_fit": [share for block in blocks for share in block["outside_fit"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="the sweep file's own count")
    parser.add_argument(
        "--max-examples", type=int, default=None, help="cap per split (default: all, as shipped)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="blocks in which the two studies alternate"
    )
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    options = parser.parse_args()
    capped = options.max_examples is not None
    arguments = [f"task.max_examples={options.max_examples}"] if capped else []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        # Untimed: creates the stores and loads TensorFlow and the data once for all.
        timed_sweep("bench_warm_up", arguments, folder, "none", trials=1, workers=1)
        # This machine flips between a fast and a slow mode: the pruned and the unpruned
        # study alternate in blocks of trials (each block resumes its study), so both meet
        # both modes alike.
        blocks: dict[str, list[dict]] = {"pruned": [], "unpruned": []}
        for round_number in range(1, options.rounds + 1):
            trials = options.trials * round_number // options.rounds
            for label, pruner in [("pruned", None), ("unpruned", "none")]:  # None: the file's
                block = timed_sweep(
                    f"bench_{label}", arguments, folder, pruner, trials, 1, options.seed
                )
                blocks[label].append(block)
        two = timed_sweep(
            "bench_unpruned_2", arguments, folder, "none", options.trials, 2, options.seed
        )
    pruned, unpruned = combined(blocks["pruned"]), combined(blocks["unpruned"])
    data = " ".join(arguments) or "the full data"
    print(
        f"\n{options.trials} trials of sentiment_cells on {data}, sampler seed {options.seed}, "
        f"{options.rounds} rounds\n"
    )
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
    # Every trial of the unpruned study runs the sweep file's whole budget: a default trial.
    shares = unpruned["outside_fit"]
    print(
        f"| time outside fit, a full trial (no pruner) | median {statistics.median(shares):.1%}, "
        f"max {max(shares):.1%} (median trial {unpruned['median_trial']:.1f} s) |"
    )


if __name__ == "__main__":
    main()
