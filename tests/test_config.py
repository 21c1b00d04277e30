"""Config composition and the one-line errors a user sees for a bad config."""

from __future__ import annotations

import subprocess
import sys

import keras
import pytest
import yaml
from omegaconf import OmegaConf

from rnnlab.config import (
    CONF_DIR,
    PROJECT_ROOT,
    ConfigError,
    compose_config,
    config_hash,
    group_choices,
    migrate_stored,
    validate,
)
from rnnlab.recurrence.stack import build_cell
from rnnlab.training.run import weight_averaging

GROUPS = ["task", "cell", "model", "optimizer", "trainer", "probe", "tracking", "experiment"]


def leaves(node, prefix: str = "") -> dict:
    """{dotted key: value} of a nested dict."""
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    return {
        k: v for key, value in node.items() for k, v in leaves(value, f"{prefix}{key}.").items()
    }


def declared_values(group: str, choice: str) -> dict:
    """What a group file declares: {dotted key: value} (see declared_paths)."""
    return {".".join(path): value for path, value in declared_paths(group, choice).items()}


def declared_paths(group: str, choice: str) -> dict:
    """What a group file declares, read as plain YAML: {path of keys: value}, placed where
    Hydra puts it (a `# @package _global_` file at the top, any other under its group)."""
    path = CONF_DIR / group / f"{choice}.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    data.pop("defaults", None)
    data.pop("hydra", None)
    if not path.read_text().startswith("# @package _global_"):
        data = {group: data}

    def leaves(node, prefix=()):
        """{path as a tuple of keys: value}: a key may hold dots (a search space's paths)."""
        if not isinstance(node, dict):
            return {prefix: node}
        return {
            k: v for key, value in node.items() for k, v in leaves(value, (*prefix, key)).items()
        }

    # An interpolation is resolved against the rest of the config; its value is not the text.
    return {k: v for k, v in leaves(data).items() if not (isinstance(v, str) and "${" in v)}


def at(cfg, path: tuple):
    for key in path:
        cfg = cfg[key]
    return cfg


@pytest.mark.parametrize(
    ("group", "choice"), [(group, choice) for group in GROUPS for choice in group_choices(group)]
)
def test_every_group_choice_composes_to_the_values_its_file_declares(group, choice):
    cfg = compose_config([f"{group}={choice}"])
    declared = declared_paths(group, choice)
    assert declared, f"conf/{group}/{choice}.yaml declares nothing"
    composed = {path: at(cfg, path) for path in declared}
    composed = {
        key: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        for key, value in composed.items()
    }
    assert composed == declared
    assert cfg.tracking.experiment == cfg.task.name


def test_the_config_package_finds_the_project_from_its_new_place():
    assert (PROJECT_ROOT / "pyproject.toml").is_file()
    assert CONF_DIR == PROJECT_ROOT / "conf" and (CONF_DIR / "config.yaml").is_file()


def test_the_cells_are_keras_cells():
    assert group_choices("cell") == [
        *("gru", "gru_chrono", "hgrn", "indrnn", "irnn", "lru", "lstm", "lstm_chrono"),
        *("mingru", "minlstm", "mlstm", "rglru", "s6", "simple_rnn", "slstm"),
    ]
    for cell in group_choices("cell"):
        built = build_cell(compose_config([f"cell={cell}"]).cell)
        assert isinstance(built, keras.Layer) and built.state_size, cell


def test_unknown_cell_lists_the_allowed_ones():
    with pytest.raises(
        ConfigError,
        match="unknown cell 'foo'; choose one of: gru, gru_chrono, hgrn, indrnn, irnn, lru, lstm, "
        "lstm_chrono, mingru, minlstm, mlstm, rglru, s6, simple_rnn, slstm",
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
        ("model.short_conv=-1", r"model.short_conv is a width in steps \(0: none\), got -1"),
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
            "rnnlab: unknown cell 'foo'; choose one of: gru, gru_chrono, hgrn, indrnn, irnn, "
            "lru, lstm, lstm_chrono, mingru, minlstm, mlstm, rglru, s6, simple_rnn, slstm",
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
    from rnnlab.config import files

    conf = tmp_path / "conf"
    shutil.copytree(config.CONF_DIR, conf)
    monkeypatch.setattr(files, "CONF_DIR", conf)
    given = [["task=adding", "seed=3"], ["task=adding", "task.length=7"], ["cell=lstm"]]
    for many, single in zip(config.compose_many(given), map(compose_config, given), strict=True):
        assert many == single
    adding = conf / "task" / "adding.yaml"
    adding.write_text(adding.read_text().replace("length: 100 ", "length: 123 ", 1))
    [cfg] = config.compose_many([["task=adding", "seed=4"]])
    assert cfg.task.length == 123


# The settings a task's file sets in the group that owns them (conf/task/translation.yaml).
OWNED_ELSEWHERE = (
    "trainer.epochs",
    "cell.units",
    "optimizer.learning_rate",
    "trainer.clipnorm",
    "trainer.ema_momentum",
    "model.dropout",
)


def test_a_task_sets_the_owners_keys_and_experiments_and_the_command_line_beat_it():
    translation = compose_config(["task=translation", "cell=gru"])
    sentiment = compose_config(["task=sentiment", "cell=gru"])
    in_file = declared_values("task", "translation")
    defaults = {
        **declared_values("trainer", "default"),
        **declared_values("model", "default"),
        **declared_values("optimizer", "adam"),
        **declared_values("cell", "gru"),
    }
    for key in OWNED_ELSEWHERE:
        assert OmegaConf.select(translation, key) == in_file[key] != defaults[key], key
        assert OmegaConf.select(sentiment, key) == defaults[key], f"{key} leaked into sentiment"
    overridden = compose_config(
        ["task=translation", "cell=gru", "optimizer.learning_rate=0.01", "model.dropout=0.1"]
    )
    assert overridden.optimizer.learning_rate == 0.01 and overridden.model.dropout == 0.1
    assert overridden.trainer.clipnorm == in_file["trainer.clipnorm"], "the others keep the task's"
    # cells_vs_tasks sets 3 epochs for every task, and 6 for translation's runs (per_task).
    experiment = compose_config(["experiment=cells_vs_tasks", "task=translation"])
    assert experiment.trainer.epochs == 3 != in_file["trainer.epochs"]
    assert experiment.cell.units == in_file["cell.units"], (
        "the task's, where the experiment sets none"
    )


@pytest.mark.parametrize("key", ["units", "epochs", "dropout", "learning_rate", "clipnorm"])
def test_a_setting_of_another_group_is_no_task_key(key):
    with pytest.raises(ConfigError, match=f"task.{key}") as error:
        compose_config(["task=translation", f"task.{key}=1"])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+task.lenght=5"], "task.lenght: Key 'lenght' not in 'SentimentSchema'"),
        (["task=adding", "task.length=long"], "task.length: Value 'long' of type 'str'"),
        (["task=translation", "task.beam_size=1.5"], "task.beam_size: Value '1.5'"),
        (["task=translation", "task.tied_embeddings=maybe"], "task.tied_embeddings: Value 'maybe'"),
        (["optimizer.learning_rate=-1"], "optimizer.learning_rate must be a positive number"),
        (["+experiment_task_overrides={}"], "experiment_task_overrides is now per_task"),
    ],
)
def test_a_wrong_task_key_or_value_fails_in_one_line_naming_it(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        compose_config(overrides)
    assert "\n" not in str(error.value)


def test_a_key_added_later_leaves_stored_runs_identified_and_runnable_until_set():
    """A config stored before `trainer.ema_momentum` existed hashes as today's default and,
    migrated, validates; setting the key makes another grid point."""
    today = compose_config(["cell=gru"])
    stored = OmegaConf.to_container(today)
    del stored["trainer"]["ema_momentum"]
    stored = OmegaConf.create(stored)
    assert config_hash(stored) == config_hash(today)
    migrated = migrate_stored(stored)
    validate(migrated)
    assert weight_averaging(migrated.trainer) == weight_averaging(today.trainer) == {}
    averaged = compose_config(["cell=gru", "trainer.ema_momentum=0.99"])
    assert config_hash(averaged) != config_hash(today)
    assert weight_averaging(averaged.trainer) == {"use_ema": True, "ema_momentum": 0.99}
