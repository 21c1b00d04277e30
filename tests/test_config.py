"""Config composition and the one-line errors a user sees for a bad config."""

from __future__ import annotations

import subprocess
import sys

import keras
import pytest
from omegaconf import OmegaConf

from rnnlab.config import ConfigError, compose_config, config_hash, group_choices, validate
from rnnlab.recurrence.stack import build_cell
from rnnlab.training.run import weight_averaging

GROUPS = ["task", "cell", "model", "optimizer", "trainer", "probe", "tracking", "experiment"]


@pytest.mark.parametrize(
    ("group", "choice"), [(group, choice) for group in GROUPS for choice in group_choices(group)]
)
def test_every_group_choice_composes_and_validates(group, choice):
    cfg = compose_config([f"{group}={choice}"])
    if group == "experiment":
        assert cfg.experiment_name == choice, "an experiment tags its runs with its own name"
    else:
        assert cfg[group] is not None
    assert cfg.tracking.experiment == cfg.task.name


def test_the_cells_are_keras_cells():
    assert group_choices("cell") == [
        *("gru", "indrnn", "irnn", "lru", "lstm", "mingru", "minlstm", "simple_rnn")
    ]
    for cell in group_choices("cell"):
        built = build_cell(compose_config([f"cell={cell}"]).cell)
        assert isinstance(built, keras.Layer) and built.state_size, cell


def test_unknown_cell_lists_the_allowed_ones():
    with pytest.raises(
        ConfigError,
        match="unknown cell 'foo'; choose one of: gru, indrnn, irnn, lru, lstm, mingru, minlstm, "
        "simple_rnn",
    ):
        compose_config(["cell=foo"])


def test_unknown_choice_inside_a_multirun_list_is_caught():
    with pytest.raises(ConfigError, match="unknown cell 'lsmt'"):
        compose_config(["cell=gru,lsmt"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.epochs=-1", "trainer.epochs must be at least 1, got -1"),
        ("trainer.batch_size=0", "trainer.batch_size must be at least 1"),
        ("trainer.clipnorm=-2", "trainer.clipnorm must be null or > 0"),
        ("trainer.ema_momentum=1", r"trainer.ema_momentum must be null or in \(0, 1\)"),
        ("trainer.epochs=abc", "trainer.epochs: Value 'abc' of type 'str' could not be converted"),
        ("model.dropout=1.5", r"model.dropout must be in \[0, 1\)"),
        ("cell.units=0", "cell.units must be a positive integer"),
        ("task.direction=up", "task.direction must be maximize or minimize"),
        ("trainer.precision=float16", "trainer.precision must be one of float32, mixed_bfloat16"),
    ],
)
def test_bad_values_fail_with_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as error:
        compose_config([override])
    assert "\n" not in str(error.value)


def test_unknown_key_fails_with_one_line():
    with pytest.raises(ConfigError, match="trainer.epochz") as error:
        compose_config(["trainer.epochz=3"])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (
            "cell=foo",
            "rnnlab: unknown cell 'foo'; choose one of: gru, indrnn, irnn, lru, lstm, mingru, "
            "minlstm, simple_rnn",
        ),
        ("trainer.epochs=-1", "rnnlab: trainer.epochs must be at least 1, got -1"),
    ],
)
def test_cli_rejects_bad_config_before_importing_tensorflow(argument, message):
    probe = (
        "import sys\n"
        "from rnnlab.cli import main\n"
        "try:\n"
        f"    main(['train', '{argument}'])\n"
        "except SystemExit as exit:\n"
        "    print(exit.code)\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.splitlines() == [message, "tensorflow imported: False"]


def test_cli_unknown_command_names_the_commands():
    result = subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", "trian"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    commands = "train, prepare, sweep, paper, report, reproduce, evaluate, predict, native, info"
    assert result.stderr.strip() == f"rnnlab: unknown command 'trian'; choose one of: {commands}"


def test_compose_many_matches_hydra_and_notices_a_changed_config_file(tmp_path, monkeypatch):
    """compose_many keeps composed group choices for the process; an edited file (a new
    `*_best.yaml` from a sweep, a changed default) must be read again."""
    import shutil

    from rnnlab import config

    conf = tmp_path / "conf"
    shutil.copytree(config.CONF_DIR, conf)
    monkeypatch.setattr(config, "CONF_DIR", conf)
    given = [["task=adding", "seed=3"], ["task=adding", "task.length=7"], ["cell=lstm"]]
    for many, single in zip(config.compose_many(given), map(compose_config, given), strict=True):
        assert many == single
    adding = conf / "task" / "adding.yaml"
    adding.write_text(adding.read_text().replace("length: 100 ", "length: 123 ", 1))
    [cfg] = config.compose_many([["task=adding", "seed=4"]])
    assert cfg.task.length == 123


# Each setting a task may name for itself (conf/task/*.yaml), and where it lands.
TASK_SETTINGS = {
    "epochs": "trainer.epochs",
    "units": "cell.units",
    "learning_rate": "optimizer.learning_rate",
    "clipnorm": "trainer.clipnorm",
    "ema_momentum": "trainer.ema_momentum",
    "dropout": "model.dropout",
}


def test_a_task_names_its_own_settings_and_the_command_line_still_wins():
    translation = compose_config(["task=translation", "cell=gru"])
    sentiment = compose_config(["task=sentiment", "cell=gru"])
    for key, target in TASK_SETTINGS.items():
        named = translation.task[key]
        assert OmegaConf.select(translation, target) == named, key
        assert OmegaConf.select(sentiment, target) != named, f"{key} leaked into sentiment"
    overridden = compose_config(
        ["task=translation", "cell=gru", "optimizer.learning_rate=0.01", "model.dropout=0.1"]
    )
    assert overridden.optimizer.learning_rate == 0.01 and overridden.model.dropout == 0.1
    assert overridden.trainer.clipnorm == translation.task.clipnorm, "the others keep the task's"


def test_a_key_added_later_leaves_stored_runs_identified_and_runnable_until_set():
    """A config stored before `trainer.ema_momentum` existed hashes as today's default and
    still validates; setting the key makes another grid point."""
    today = compose_config(["cell=gru"])
    stored = OmegaConf.to_container(today)
    del stored["trainer"]["ema_momentum"]
    stored = OmegaConf.create(stored)
    validate(stored)
    assert weight_averaging(stored.trainer) == weight_averaging(today.trainer) == {}
    assert config_hash(stored) == config_hash(today)
    averaged = compose_config(["cell=gru", "trainer.ema_momentum=0.99"])
    assert config_hash(averaged) != config_hash(today)
    assert weight_averaging(averaged.trainer) == {"use_ema": True, "ema_momentum": 0.99}
