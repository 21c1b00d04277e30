"""Finding an experiment's finished runs fast: the database query agrees with MLflow's API;
grid points compose once per group choices and are cached between commands."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

import rnnlab.experiments.grids as grids
from rnnlab.config import compose_config, compose_many, config_hash
from rnnlab.experiments.grids import experiment_grid, grid_facts
from rnnlab.records import names
from rnnlab.records.runs import finished_runs, from_api, from_database


def fill(uri: str) -> dict[str, str]:
    """Runs the query must find and runs it must not; returns what each found run is."""
    client = MlflowClient(uri)
    experiment = client.create_experiment("index")
    expected = {}

    def make(experiment_name: str | None, status: str, seed: int, score: float | None = None):
        tags = {names.CONFIG_HASH: f"hash{seed}", names.SEED: str(seed)}
        if experiment_name:
            tags[names.EXPERIMENT] = experiment_name
        run = client.create_run(experiment, tags=tags).info.run_id
        if score is not None:
            client.log_metric(run, "test_loss", score + 1.0, step=0)
            client.log_metric(run, "test_loss", score, step=1)  # the latest value counts
        client.log_metric(run, "n_params", 97)
        client.set_terminated(run, status)
        return run

    for seed in range(3):
        expected[make("smoke", "FINISHED", seed, score=0.5 + seed)] = f"hash{seed}"
    expected[make("smoke", "FINISHED", 7)] = "hash7"  # no test score: found, without one
    make("smoke", "FAILED", 3, score=0.1)
    make("other", "FINISHED", 4, score=0.1)
    make(None, "FINISHED", 5, score=0.1)
    client.delete_run(make("smoke", "FINISHED", 6, score=0.1))
    return expected


def check_index(uri: str) -> None:
    expected = fill(uri)
    asked = {"tags": (names.CONFIG_HASH, names.SEED), "metrics": ("test_loss", "n_params")}
    fast = from_database(uri, "smoke", **asked)
    slow = from_api(uri, "smoke", **asked)
    assert fast == slow
    assert {run.run_id: run.tags[names.CONFIG_HASH] for run in fast} == expected
    scores = {run.tags[names.SEED]: run.metrics.get("test_loss") for run in fast}
    assert scores == {"0": 0.5, "1": 1.5, "2": 2.5, "7": None}
    assert all(run.metrics["n_params"] == 97 for run in fast)


def test_the_database_query_finds_what_mlflows_api_finds_on_sqlite(tmp_path):
    check_index(f"sqlite:///{tmp_path}/mlflow.db")


def test_the_database_query_finds_what_mlflows_api_finds_on_postgresql(postgres_database):
    check_index(postgres_database())


def test_a_store_not_yet_written_has_no_runs_and_is_not_created(tmp_path):
    assert finished_runs(f"sqlite:///{tmp_path}/none.db", "smoke") == []
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("name", ["smoke", "adding_lengths", "cells_vs_tasks_equal_params"])
def test_composing_many_points_gives_hydras_configs(name):
    grid = experiment_grid(name)[::5]  # every fifth point: each takes Hydra 0.2 s below
    lists = [[*point.overrides, "tracking.uri=sqlite:///x.db"] for point in grid]
    many = compose_many(lists)
    assert [config_hash(cfg) for cfg in many] == [config_hash(compose_config(o)) for o in lists]
    assert many[0] is not many[-1]


def test_composing_many_falls_back_to_hydra_for_what_it_cannot_apply():
    plain, added = compose_many([["task=adding", "seed=3"], ["task=adding", "+cell.extra=1"]])
    assert plain.seed == 3 and added.cell.extra == 1
    with pytest.raises(Exception, match="cell.unit"):
        compose_many([["cell.unit=3"]])


def test_grid_facts_are_cached_until_the_config_files_change(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = grid_facts("smoke")
    assert len(list((tmp_path / "rnnlab" / "grids").glob("*.json"))) == 1

    def no_composing(lists):
        raise AssertionError("composed again despite the cache")

    monkeypatch.setattr(grids, "compose_many", no_composing)
    assert grid_facts("smoke") == first
    facts = [facts for _, facts in first]
    assert {(f.task, f.cell) for f in facts} == {
        (task, cell) for task in ("adding", "copy_memory") for cell in ("simple_rnn", "lstm")
    }
    key = grids.grid_cache_key([["experiment=smoke"]])
    monkeypatch.setattr(grids, "CONF_DIR", tmp_path / "conf")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("seed: 1\n")
    assert grids.grid_cache_key([["experiment=smoke"]]) != key
