"""Two workers writing the same new row of a store at once: the one that loses goes on."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from rnnlab.records.tracking import set_experiment_tag_past_a_race, use_store


def test_a_tag_another_worker_just_set_is_set_again_not_a_failed_job(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client, other_worker = MlflowClient(uri), MlflowClient(uri)
    experiment = client.create_experiment("adding")
    real = MlflowClient.set_experiment_tag
    calls = []

    def raced(self, experiment_id, key, value):
        calls.append(key)
        if len(calls) == 1:  # the other worker inserts first; this insert then fails
            real(other_worker, experiment_id, key, value)
            raise MlflowException(
                "(sqlite3.IntegrityError) UNIQUE constraint failed: experiment_tags"
            )
        return real(self, experiment_id, key, value)

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", raced)
    set_experiment_tag_past_a_race(client, experiment, "mlflow.experimentKind", "kind")
    assert calls == ["mlflow.experimentKind"] * 2
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "kind"


def test_any_other_store_error_is_not_taken_for_a_race(tmp_path, monkeypatch):
    def broken(self, experiment_id, key, value):
        raise MlflowException("database is locked")

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", broken)
    with pytest.raises(MlflowException, match="locked"):
        use_store(f"sqlite:///{tmp_path}/mlflow.db", "adding")
