"""Sweep files are checked before any trial starts; each mistake is one line naming its line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rnnlab.config import PROJECT_ROOT
from rnnlab.sweep_file import SweepFileError, load_sweep

GOOD = """\
overrides:
  - trainer.epochs=2
space:
  cell: [lstm, gru]
  cell.units: {low: 4, high: 16, log: true}
  optimizer.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
  model.dropout: {low: 0.0, high: 0.5, step: 0.1}
n_trials: 3
"""


def write(tmp_path, text: str):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_a_good_file_parses_with_the_tasks_metric_by_default(tmp_path):
    sweep = load_sweep(write(tmp_path, GOOD), ["seed=3"])
    assert sweep.name == "sweep"
    assert (sweep.metric, sweep.direction) == ("accuracy", "maximize")
    assert [(p.path, p.kind) for p in sweep.space] == [
        ("cell", "categorical"),
        ("cell.units", "int"),
        ("optimizer.learning_rate", "float"),
        ("model.dropout", "float"),
    ]
    assert "seed=3" in sweep.overrides and sweep.overrides[0] == "trainer.epochs=2"


def test_a_command_line_override_of_a_searched_path_gives_way_to_the_sample(tmp_path):
    sweep = load_sweep(write(tmp_path, GOOD), ["cell.units=8", "trainer.batch_size=16"])
    assert "cell.units=8" not in sweep.overrides
    assert "trainer.batch_size=16" in sweep.overrides


@pytest.mark.parametrize(
    "name", sorted(path.stem for path in (PROJECT_ROOT / "sweeps").glob("*.yaml"))
)
def test_the_shipped_sweep_files_are_valid(name):
    sweep = load_sweep(PROJECT_ROOT / "sweeps" / f"{name}.yaml")
    assert sweep.name == name and sweep.n_trials


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ("  cell.units: {", "  cell.unit: {", 5, "unknown parameter path 'cell.unit'"),
        ("  cell: [lstm, gru]", "  cell: []", 4, "cell: the list of choices is empty"),
        ("  cell: [lstm, gru]", "  cell: [lstm, lsmt]", 4, "unknown cell 'lsmt'"),
        ("{low: 4, high: 16,", "{low: 16, high: 4,", 5, "bad range: low 16 is not below high 4"),
        ("low: 1.0e-4", "low: 0.0", 6, "a log range needs low > 0"),
        ("low: 1.0e-4", "low: 1e-4", 6, "write 1.0e-3"),
        ("high: 0.5, step", "high: 1.0, step", 7, "model.dropout must be in [0, 1), got 1.0"),
        ("n_trials: 3", "n_trials: 3\nsampler: bayes", 9, "unknown sampler 'bayes'"),
        ("n_trials: 3", "n_trails: 3", 8, "unknown key 'n_trails'"),
        ("n_trials: 3", "n_trials: 0", 8, "n_trials must be a positive number"),
        ("- trainer.epochs=2", "- trainer.epochs=-1", 1, "trainer.epochs must be at least 1"),
        ("n_trials: 3", "n_trials: 3\nsampler: grid", 9, "grid sampler needs a list of choices"),
    ],
)
def test_a_mistake_names_the_file_and_line(tmp_path, old, new, line, message):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(SweepFileError) as raised:
        load_sweep(path)
    assert str(raised.value).startswith(f"{path}:{line}: ")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_cli_reports_a_bad_sweep_file_in_one_line_before_training(tmp_path):
    path = write(tmp_path, GOOD.replace("  cell: [lstm, gru]", "  cell: []"))
    result = subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", "sweep", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"rnnlab: {path}:4: cell: the list of choices is empty"
    )
    assert not (tmp_path / "mlruns").exists(), "nothing is opened before the file is checked"


def test_the_shipped_pruner_options_build_their_optuna_pruner():
    """sentiment_cells' successive-halving options must be ones Optuna's pruner accepts."""
    import optuna

    from rnnlab.sweep import make_pruner

    pruner = make_pruner(load_sweep(PROJECT_ROOT / "sweeps" / "sentiment_cells.yaml"))
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
