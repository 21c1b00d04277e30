"""Sweep files are checked before any trial starts; each mistake is one line naming its line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from rnnlab.config import PROJECT_ROOT
from rnnlab.experiments.sweep_file import SweepFileError, load_sweep

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
    assert sweep.store_models is False  # a model per trial adds up: off unless asked


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
        ("n_trials: 3", "budget_minutes: 0", 8, "budget_minutes must be a positive number"),
        ("n_trials: 3", "seed: 1", 1, "set n_trials, timeout or budget_minutes"),
        ("- trainer.epochs=2", "- trainer.epochs=-1", 1, "trainer.epochs must be at least 1"),
        ("n_trials: 3", "n_trials: 3\nsampler: grid", 9, "grid sampler needs a list of choices"),
        ("n_trials: 3", "n_trials: 3\nstore_models: yes please", 9, "store_models must be true"),
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

    from rnnlab.experiments.study_storage import make_pruner

    pruner = make_pruner(load_sweep(PROJECT_ROOT / "sweeps" / "sentiment_cells.yaml"))
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)


def test_a_multi_objective_file_trades_the_score_against_costs_and_trains_every_trial(tmp_path):
    text = GOOD + "metric: [accuracy, n_params, epoch_seconds]\n"
    sweep = load_sweep(write(tmp_path, text))
    assert sweep.multi_objective and sweep.pruner == "none"
    assert sweep.objectives == ("best_val_accuracy", "n_params", "epoch_seconds")
    assert sweep.directions == ("maximize", "minimize", "minimize")
    assert "task.metric=accuracy" in sweep.overrides
    directed = load_sweep(
        write(
            tmp_path, GOOD + "metric: [loss, samples_per_second]\ndirection: [minimize, maximize]\n"
        )
    )
    assert directed.directions == ("minimize", "maximize") and directed.metric == "loss"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "metric: [accuracy, n_params]\npruner: median\n",
            ":10: Optuna's pruners are single-objective: use pruner: none here",
        ),
        (
            "metric: [accuracy, n_params]\nsampler: cmaes\n",
            ":10: the cmaes sampler is single-objective",
        ),
        ("metric: [n_params, accuracy]\n", ":9: metric: the first objective is a validation score"),
        ("metric: [accuracy, loss]\n", ":9: metric: after the validation score come costs"),
        ("metric: [accuracy, n_params]\ndirection: maximize\n", ":10: direction: give one per"),
        (
            "metric: [accuracy, n_params]\ndirection: [maximize, up]\n",
            ":10: direction must be maximize or minimize, not up",
        ),
        ("sampler: bayes\n", ":9: unknown sampler 'bayes'; choose one of: tpe, random, grid, gp"),
    ],
)
def test_multi_objective_and_sampler_mistakes_are_one_line(tmp_path, extra, message):
    with pytest.raises(SweepFileError) as raised:
        load_sweep(write(tmp_path, GOOD + extra))
    assert message in str(raised.value)


def test_every_sampler_and_pruner_name_builds_its_own_optuna_class():
    """A name accepted by the checker cannot silently run as another algorithm."""
    import optuna

    from rnnlab.experiments.search_algorithms import PRUNERS, SAMPLERS, make_pruner, make_sampler

    for name, kind in SAMPLERS.items():
        if importlib.util.find_spec(kind.needs or "optuna") is None:
            continue  # an optional sampler whose package is absent: its error is tested below
        sampler = make_sampler(name, {}, seed=0, grid={"x": [0.0, 1.0]})
        assert type(sampler) is kind.cls, name
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0) ** 2, n_trials=2)
        assert len(study.trials) == 2
    for name, cls in PRUNERS.items():
        assert type(make_pruner(name, {})) is cls, name


def test_a_sampler_whose_package_is_missing_says_how_to_install_it(tmp_path, monkeypatch):
    import rnnlab.experiments.search_algorithms as algorithms

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        algorithms.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "torch" else real_find_spec(name, *args),
    )
    with pytest.raises(SweepFileError, match=r":9: the gp sampler needs PyTorch: .*pip install"):
        load_sweep(write(tmp_path, GOOD + "sampler: gp\n"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "metric: acc\n",
            ":9: metric: task sentiment logs no val_acc; its validation scores: loss, accuracy",
        ),
        (
            "direction: maximize\nmetric: [acc, n_params]\n",
            ":10: metric: task sentiment logs no val_acc; its validation scores: loss, accuracy",
        ),
        (
            "sampler_options:\n  n_startup_trials: 3\n  n_ei_candidate: 8\n",
            ":11: sampler_options: unknown option 'n_ei_candidate' of Optuna's TPESampler; "
            "its options: consider_prior,",
        ),
        (
            "sampler_options: {n_startup_trials: 2.5}\n",
            ":9: sampler_options: n_startup_trials must",
        ),
        ("sampler_options: {seed: 3}\n", ":9: sampler_options: 'seed' is not an option here"),
        ("sampler_options: {gamma: 0.1}\n", ":9: sampler_options: gamma takes a Python function"),
        ("pruner_options: {n_warmup_step: 2}\n", ":9: pruner_options: unknown option 'n_warmup_s"),
        ("pruner_options: {n_warmup_steps: two}\n", ":9: pruner_options: n_warmup_steps must be"),
        (
            "pruner_options: {n_startup_trials: -1}\n",
            ":9: pruner_options: Number of startup trials cannot be negative",
        ),
        (  # the options of the file's former pruner, which hyperband does not take
            "pruner: hyperband\npruner_options: {n_startup_trials: 4}\n",
            ":10: pruner_options: unknown option 'n_startup_trials' of Optuna's HyperbandPruner",
        ),
        (
            "pruner: successive_halving\npruner_options: {reduction_factor: 1}\n",
            ":10: pruner_options: The value of `reduction_factor` is 1, but must be `reduction_",
        ),
    ],
)
def test_an_unknown_metric_or_a_bad_algorithm_option_fails_on_its_line(tmp_path, extra, message):
    """Each would otherwise surface only once the study and the parent run exist: the metric
    as a KeyError after trial 0 trained, the option when the first worker builds its sampler."""
    path = write(tmp_path, GOOD + extra)
    with pytest.raises(SweepFileError) as raised:
        load_sweep(path)
    assert str(raised.value).startswith(f"{path}{message}")
    assert "\n" not in str(raised.value)


def test_the_validation_scores_a_sweep_may_rank_by_are_the_ones_the_task_logs(tmp_path):
    """A task whose headline is test-only (BLEU) is ranked by its validation stand-in by
    default; a task's second Keras metric (forecasting's rmse) is a valid score too."""
    translation = load_sweep(write(tmp_path, GOOD), ["task=translation"])
    assert translation.objectives == ("best_val_token_accuracy",)
    forecast = load_sweep(write(tmp_path, GOOD + "metric: rmse\n"), ["task=forecasting"])
    assert forecast.objectives == ("best_val_rmse",)
    loss = load_sweep(write(tmp_path, GOOD + "metric: loss\n"))  # sentiment's headline: up
    assert (loss.metric, loss.direction) == ("loss", "minimize")
    pruned_none = GOOD + "pruner: none\npruner_options: {n_startup_trials: 4}\n"
    assert load_sweep(write(tmp_path, pruned_none)).pruner == "none"  # options kept, ignored


def test_the_metric_table_matches_the_metrics_each_task_compiles():
    """TASK_KERAS_METRICS restates the tasks' Keras metrics so the check runs before
    TensorFlow loads: a task that changes its metrics must change the table too."""
    import importlib

    from rnnlab.config import TASK_KERAS_METRICS
    from rnnlab.tasks import TASK_MODULES

    compiled = {}
    for task, (module, name) in TASK_MODULES.items():
        cls = getattr(importlib.import_module(module), name)
        metrics = cls.metrics.fget(None) if isinstance(cls.metrics, property) else cls.metrics
        compiled[task] = tuple(m if isinstance(m, str) else m.name for m in metrics)
    assert compiled == TASK_KERAS_METRICS


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ("metric: acc\n", 9, "metric: task sentiment logs no val_acc"),
        ("pruner_options: {n_warmup_step: 2}\n", 9, "pruner_options: unknown option"),
    ],
)
def test_the_cli_fails_a_bad_metric_or_option_in_one_line_leaving_nothing(
    tmp_path, extra, line, message
):
    path = write(tmp_path, GOOD + extra)
    result = subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", "sweep", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    [error] = result.stderr.strip().splitlines()
    assert error.startswith(f"rnnlab: {path}:{line}: {message}")
    # Neither an Optuna study (the default storage is mlruns/optuna.db) nor an MLflow store.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_a_minutes_budget_counts_finished_trials_time_not_their_number(tmp_path):
    """`budget_minutes`: no new trial once the finished trials have run that long in all,
    however many they are; an interrupted trial (rerun on resume) spends nothing."""
    import datetime

    import optuna

    from rnnlab.experiments.objective import INTERRUPTED_ATTR
    from rnnlab.experiments.study_storage import budget_spent, minutes_spent

    sweep = load_sweep(write(tmp_path, GOOD.replace("n_trials: 3", "budget_minutes: 10")))
    assert (sweep.n_trials, sweep.budget_minutes) == (None, 10)
    study = optuna.create_study()
    start = datetime.datetime(2026, 12, 5, 12, 0)

    def add(minutes: float, **attrs) -> None:
        study.add_trial(
            optuna.trial.FrozenTrial(
                number=0,  # renumbered by the study
                state=optuna.trial.TrialState.COMPLETE,
                value=0.5,
                datetime_start=start,
                datetime_complete=start + datetime.timedelta(minutes=minutes),
                params={"x": 0.1},
                distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
                user_attrs=attrs,
                system_attrs={},
                intermediate_values={},
                trial_id=0,
            )
        )

    add(4)
    add(5)
    add(30, **{INTERRUPTED_ATTR: True})
    assert minutes_spent(study) == pytest.approx(9)
    assert not budget_spent(sweep, study)
    add(1.5)
    assert minutes_spent(study) == pytest.approx(10.5)
    assert budget_spent(sweep, study)
