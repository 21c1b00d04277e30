"""What early stopping saves a pruned sweep: epochs and wall time per trial, at what score.

Runs sweeps/sentiment_cells.yaml as shipped (its pruner and early stopping together)
against the same file with early stopping off (the pruner alone, as before early stopping
watched the sweep's own metric), same sampler seed and trial count, alternating in blocks
so the machine's fast and slow modes fall on both. Reports the epochs a trial trains,
wall time, the best value and the best trial's test score with the epoch it was taken at.

    .venv/bin/python benchmarks/sweep_early_stopping.py [--trials 30] [--max-examples N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from mlflow import MlflowClient
from sweep_pruning import combined, timed_sweep  # noqa: I001 (a sibling script)

CONTENDERS = {
    "pruner + early stopping (as shipped)": [],
    "pruner alone (early stopping off)": ["trainer.early_stopping_patience=null"],
}


def trial_runs(folder: Path, study: str) -> list:
    client = MlflowClient(f"sqlite:///{folder}/ml.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, f"tags.`optuna.study` = '{study}'")


def epochs_trained(run, client: MlflowClient) -> int:
    return len(client.get_metric_history(run.info.run_id, "val_accuracy"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    options = parser.parse_args()
    capped = [f"task.max_examples={options.max_examples}"] if options.max_examples else []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        timed_sweep("bench_warm_up", capped, folder, "none", trials=1, workers=1)  # untimed
        blocks: dict[str, list[dict]] = {label: [] for label in CONTENDERS}
        for round_number in range(1, options.rounds + 1):
            trials = options.trials * round_number // options.rounds
            for index, (label, overrides) in enumerate(CONTENDERS.items()):
                study = f"bench_{index}"
                block = timed_sweep(
                    study, [*capped, *overrides], folder, None, trials, 1, options.seed
                )
                blocks[label].append(block)
        client = MlflowClient(f"sqlite:///{folder}/ml.db")
        print(
            f"\n{options.trials} trials of sentiment_cells, sampler seed {options.seed}, "
            f"{options.rounds} rounds, {' '.join(capped) or 'the full data'}\n"
        )
        print("| measure | " + " | ".join(CONTENDERS) + " |")
        print("|---|" + "---|" * len(CONTENDERS))
        rows: dict[str, list[str]] = {}
        for index, label in enumerate(CONTENDERS):
            result = combined(blocks[label])
            runs = trial_runs(folder, f"bench_{index}")
            epochs = [epochs_trained(run, client) for run in runs]
            finished = [run for run in runs if run.info.status == "FINISHED"]
            best = max(finished, key=lambda run: run.data.metrics["best_val_accuracy"])
            metrics = best.data.metrics
            cells = {
                "wall time": f"{result['wall']:.0f} s",
                "epochs per trial (mean)": f"{statistics.mean(epochs):.2f}",
                "epochs, all trials": str(sum(epochs)),
                "pruned / stopped early": (
                    f"{result['pruned']} / "
                    f"{sum(r.data.metrics.get('epochs_trained', 9) < 9 for r in finished)}"
                ),
                "best val_accuracy": f"{metrics['best_val_accuracy']:.4f}",
                "its test_accuracy (epoch tested / trained)": (
                    f"{metrics['test_accuracy']:.4f} ({metrics['tested_epoch']:.0f} / "
                    f"{metrics['epochs_trained']:.0f})"
                ),
            }
            for measure, value in cells.items():
                rows.setdefault(measure, []).append(value)
        for measure, values in rows.items():
            print(f"| {measure} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
