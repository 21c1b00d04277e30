"""The `rnnlab` command as a user runs it, in a fresh process."""

from __future__ import annotations

import pytest
from command_checks import TINY_ADDING
from command_checks import rnnlab_command as rnnlab
from mlflow import MlflowClient


@pytest.mark.slow
def test_multirun_trains_one_run_per_cell(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = rnnlab(
        "train", "-m", "cell=simple_rnn,gru", *TINY_ADDING, f"tracking.uri={uri}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("test loss: ") == 2
    runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("adding").experiment_id]
    )
    assert sorted(run.data.params["cell._target_"] for run in runs) == [
        "keras.layers.GRUCell",
        "keras.layers.SimpleRNNCell",
    ]
    assert {run.info.status for run in runs} == {"FINISHED"}


def test_missing_data_is_one_line_telling_to_run_make_install(tmp_path, tiny_overrides):
    result = rnnlab(
        "train",
        *tiny_overrides,
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        cwd=tmp_path,
        env_extra={"RNNLAB_DATA_DIR": str(tmp_path / "nothing")},
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("rnnlab: dataset 'rotten_tomatoes_snippets' is not prepared")
    assert last_line.endswith("run `make install`")
    assert not (tmp_path / "mlflow.db").exists(), "no run is opened without data"
    assert list(tmp_path.iterdir()) == [], "hydra.main's outputs/ is removed on a failure"
