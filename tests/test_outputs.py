"""What a command writes goes to the working directory or `--output`, never into rnnlab's
own folders, and a command that fails leaves nothing behind (#44)."""

from __future__ import annotations

import optuna
import pytest

from rnnlab import cli
from rnnlab.config import CONF_DIR, PROJECT_ROOT
from rnnlab.experiments.sweep_file import load_sweep
from rnnlab.records.store_access import create_store
from rnnlab.reports.sweep_report import write_best_experiment


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> str:
    """A store with MLflow's tables and no runs: a report of it shows every cell missing."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"
    create_store(uri)
    return uri


def test_a_report_goes_to_reports_of_the_working_directory(tmp_path, monkeypatch, empty_store):
    monkeypatch.chdir(tmp_path)
    cli.main(["report", "smoke", f"tracking.uri={empty_store}"])
    assert (tmp_path / "reports" / "smoke" / "table.md").is_file()
    cli.main(["report", "smoke", f"tracking.uri={empty_store}", "--output", "elsewhere"])
    assert sorted(path.name for path in (tmp_path / "elsewhere").iterdir()) == [
        "README.md",
        "claims.json",
        "table.md",
        "table.tex",
    ]


def test_an_output_that_cannot_be_written_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as exited:
        cli.main(["paper", "smoke", "--output", "a_file/report"])
    assert str(exited.value) == (
        f"rnnlab: cannot write a_file/report/: {tmp_path / 'a_file'} is not a folder this "
        "user can write"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


def best_of(sweep) -> optuna.Study:
    study = optuna.create_study(direction=sweep.direction)
    study.add_trial(
        optuna.trial.create_trial(
            params={"cell": "gru"},
            distributions={"cell": optuna.distributions.CategoricalDistribution(["gru"])},
            value=0.75,
        )
    )
    return study


def test_the_best_trial_is_written_where_the_sweep_is_told(tmp_path, monkeypatch, capsys):
    sweep = load_sweep(PROJECT_ROOT / "sweeps" / "smoke.yaml")
    study = best_of(sweep)
    monkeypatch.chdir(tmp_path)
    path = write_best_experiment(study, sweep, cli.BEST_EXPERIMENTS)
    assert path.resolve() == tmp_path / "conf" / "experiment" / "smoke_best.yaml"
    assert path.read_text().splitlines()[2] == (
        f"# Written by `rnnlab sweep {sweep.source}`; retrain: copy it into "
        f"{CONF_DIR / 'experiment'}/, then rnnlab train experiment=smoke_best"
    )
    assert "(retrain: copy it into" in capsys.readouterr().out
    # From the project's root the default is rnnlab's own conf/experiment/, as it always was.
    monkeypatch.chdir(PROJECT_ROOT)
    assert (PROJECT_ROOT / cli.BEST_EXPERIMENTS).resolve() == (CONF_DIR / "experiment").resolve()


def test_a_failed_report_leaves_no_folder(tmp_path, monkeypatch, empty_store):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="unknown experiment 'nope'"):
        cli.main(["report", "nope", f"tracking.uri={empty_store}"])
    from rnnlab.reports import report

    def broken(*arguments):
        raise OSError("disk full")

    monkeypatch.setattr(report, "figures", broken)  # fails with its tables written
    with pytest.raises(OSError, match="disk full"):
        cli.main(["report", "smoke", f"tracking.uri={empty_store}"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["predict", "evaluate", "reproduce", "report"])
def test_a_mistyped_store_path_is_one_line_and_no_new_database(tmp_path, command):
    """MLflow makes the database it is pointed at: predict on a typo made an empty store."""
    missing = tmp_path / "mlrnus" / "mlflow.db"
    arguments = [command, "smoke" if command == "report" else "0123abcd"]
    arguments += ["a fine film"] if command == "predict" else []
    with pytest.raises(SystemExit) as exited:
        cli.main([*arguments, f"tracking.uri=sqlite:///{missing}"])
    assert str(exited.value) == (
        f"rnnlab: cannot reach the tracking store sqlite:///{missing}: {missing} does not "
        "exist (a mistyped path? `rnnlab train` makes a store)"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_empty_experiment_name_makes_no_store(tmp_path):
    """`tracking.experiment=` was an empty store after a traceback; now it is one line."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", "train", "tracking.experiment=",
         f"tracking.uri=sqlite:///{tmp_path}/store/mlflow.db"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "rnnlab: tracking.experiment must name an MLflow experiment, got an empty name"
    ]
    assert list(tmp_path.iterdir()) == []


def test_bad_sampler_options_make_no_study_and_no_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = (PROJECT_ROOT / "sweeps" / "smoke.yaml").read_text()
    (tmp_path / "bad.yaml").write_text(sweep + "sampler_options: {n_startup_trial: 2}\n")
    with pytest.raises(SystemExit) as exited:
        cli.main(["sweep", "bad.yaml", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
    assert str(exited.value).startswith("rnnlab: bad.yaml:")
    assert "sampler_options" in str(exited.value)
    assert [path.name for path in tmp_path.iterdir()] == ["bad.yaml"]
