"""Runs stored before rnnlab's modules moved into packages keep their identity.

`fixtures/store_before_41.tar.gz` is an MLflow store written by the code at e5355a7 (the
last commit before the move): `rnnlab paper smoke` (8 runs) and one `rnnlab train
task=adding cell=lru` (experiment `before41`), each with its stored model.
`fixtures/config_hashes_before_41.json` holds the config hashes that code computed for every
task x cell, a few overrides, and every experiment's grid (but adding_lengths, redefined on
purpose since: its claims need other lengths and budgets). Today's code must find the same
identities, resume nothing that finished, and evaluate and reproduce the stored runs.
"""

from __future__ import annotations

import json
import sqlite3
import tarfile
from pathlib import Path

import pytest
from mlflow import MlflowClient

from rnnlab.config import compose_config, config_hash
from rnnlab.experiments.grids import grid_facts

FIXTURES = Path(__file__).parent / "fixtures"
STORED_AT = "/tmp/rnnlab-store-before-41"  # where the store was written
HASHES = json.loads((FIXTURES / "config_hashes_before_41.json").read_text())


def test_every_configuration_keeps_the_hash_it_had_before():
    changed = {
        overrides: stored
        for overrides, stored in HASHES["single"].items()
        if config_hash(compose_config(overrides.split())) != stored
    }
    assert not changed
    assert len(HASHES["single"]) >= 70


@pytest.mark.parametrize("experiment", sorted(HASHES["grids"]))
def test_every_grid_point_keeps_the_hash_it_had_before(experiment):
    today = {" ".join(point.axes): facts.config_hash for point, facts in grid_facts(experiment)}
    before = HASHES["grids"][experiment]
    # Every point the grid had keeps its hash (its runs stay finished); a grid may grow.
    assert {point: today.get(point) for point in before} == before


@pytest.fixture(scope="module")
def old_store(tmp_path_factory) -> str:
    """The fixture store unpacked, its absolute artifact paths pointed at where it now is."""
    folder = tmp_path_factory.mktemp("store_before_41")
    with tarfile.open(FIXTURES / "store_before_41.tar.gz") as archive:
        archive.extractall(folder, filter="data")
    with sqlite3.connect(folder / "mlflow.db") as database:
        for table, column in (
            ("experiments", "artifact_location"),
            ("runs", "artifact_uri"),
            ("logged_models", "artifact_location"),
        ):
            database.execute(
                f"UPDATE {table} SET {column} = REPLACE({column}, ?, ?)",
                (STORED_AT, str(folder)),
            )
    return f"sqlite:///{folder}/mlflow.db"


def lru_run(uri: str) -> str:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("before41")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["cell._target_"] == "rnnlab.cells.LRUCell"  # the old path
    return run.info.run_id


@pytest.mark.slow
def test_paper_resumes_a_grid_stored_before_without_training_again(old_store):
    from rnnlab.experiments.paper import run_experiment

    # The stored grid was untuned (smoke's `tune:` block came later): `tune=null` is that grid.
    untuned = [f"tracking.uri={old_store}", "tracking.log_model=false", "tune=null"]
    counts = run_experiment("smoke", untuned)
    assert counts["skipped"] == 8
    assert counts["ran"] == counts["failed"] == counts["left"] == 0


@pytest.mark.slow
def test_a_model_stored_before_evaluates_to_its_logged_scores(old_store):
    from rnnlab.training.evaluate import evaluate

    rows = {
        name: (logged, recomputed)
        for name, logged, recomputed in evaluate(lru_run(old_store), old_store)
    }
    assert set(rows) == {"test_loss", "test_baseline_loss"}
    for logged, recomputed in rows.values():
        assert recomputed == pytest.approx(logged, rel=1e-5)


@pytest.mark.slow
def test_a_run_stored_before_reproduces_with_its_cell_at_todays_path(old_store):
    from rnnlab.training.reproduce import reproduce

    compared, _ = reproduce(lru_run(old_store), old_store)
    original, reproduced = compared["test_loss"]
    assert reproduced == pytest.approx(original, rel=0.05)
