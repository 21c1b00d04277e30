"""`rnnlab paper NAME`: every configuration of an experiment's grid, resumably.

Each point runs through `train.run`, unless its resolved config already has a FINISHED run
in MLflow: a killed `make paper` continues where it stopped. Deciding what is left stays
fast at thousands of runs and points: the grid's facts are cached (`grids.py`), and the
store is read with one query (`run_index.py`).
"""

from __future__ import annotations

from rnnlab.config import compose_config
from rnnlab.grids import grid_facts
from rnnlab.run_index import finished_runs


def finished_hashes(tracking_uri: str, experiment_name: str) -> set[str]:
    """Config hashes of the experiment's FINISHED runs in the store."""
    runs = finished_runs(tracking_uri, experiment_name, tags=("rnnlab.config_hash",))
    return {run.tags.get("rnnlab.config_hash") for run in runs}


def run_experiment(name: str, extra_overrides: list[str] = ()) -> dict[str, int]:
    """Run every missing point of the grid; returns how many ran, were skipped or failed."""
    points = grid_facts(name, extra_overrides)
    # Read without opening MLflow: a store not written yet has nothing finished.
    tracking = compose_config([*points[0][0].overrides, *extra_overrides]).tracking
    done = finished_hashes(tracking.uri, name)
    counts = {"ran": 0, "skipped": 0, "failed": 0}
    for number, (point, facts) in enumerate(points, start=1):
        label = f"[{number}/{len(points)}] {' '.join(point.axes)}"
        if facts.config_hash in done:
            print(f"{label}: finished before, skipped", flush=True)
            counts["skipped"] += 1
            continue
        print(f"{label}: training", flush=True)
        # Imported only now: TensorFlow takes seconds to load, and a resumed grid with
        # nothing left to train must decide that without it.
        from rnnlab.callbacks import NonFiniteLossError
        from rnnlab.train import run

        try:
            run(compose_config([*point.overrides, *extra_overrides]))
        except NonFiniteLossError as error:
            # Recorded as a FAILED run with its reason; the report shows the cell as missing.
            print(f"{label}: failed: {error}", flush=True)
            counts["failed"] += 1
            continue
        counts["ran"] += 1
    return counts
