"""The table of config migrations: a config stored in an earlier layout reads as today's
config with the same effective values and the same hash, and today's layout hashes as the
one hashes were defined in.

`fixtures/configs_stored_before_41.yaml` holds configs composed (and resolved, as a run
stores them) from the `conf/` tree of e5355a7, where the translation and captioning task
files declared `task.units`, `task.epochs`, ... and the groups read them;
`fixtures/config_hashes_before_41.json` the hashes that code gave them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from rnnlab.config import (
    compose_config,
    config_hash,
    migrate_stored,
    per_task_overrides,
    stored_before,
    validate,
    with_experiment_task_overrides,
)
from rnnlab.config.compose import compose_unresolved
from rnnlab.config.migrations import hashed_layout
from rnnlab.experiments.grids import experiment_grid

FIXTURES = Path(__file__).parent / "fixtures"
STORED = yaml.safe_load((FIXTURES / "configs_stored_before_41.yaml").read_text())
HASHES = json.loads((FIXTURES / "config_hashes_before_41.json").read_text())["single"]

# Where each setting a task file used to declare lives today.
MOVED = {
    "units": "cell.units",
    "epochs": "trainer.epochs",
    "dropout": "model.dropout",
    "learning_rate": "optimizer.learning_rate",
    "clipnorm": "trainer.clipnorm",
    "ema_momentum": "trainer.ema_momentum",
}


@pytest.mark.parametrize("overrides", sorted(STORED))
def test_a_config_stored_in_the_old_layout_migrates_to_todays_with_its_hash(overrides):
    stored = STORED[overrides]
    migrated = migrate_stored(OmegaConf.create(stored))
    assert not set(MOVED) & set(migrated.task), "no setting keeps a copy under task"
    validate(migrated)
    assert config_hash(migrated) == HASHES[overrides]
    # What ran: every owner key holds the value the stored run resolved for it.
    for key, owner in MOVED.items():
        assert OmegaConf.select(migrated, owner) == OmegaConf.select(
            OmegaConf.create(stored), owner
        ), owner
    # And today's composition of the same overrides is that config (where it is recorded aside).
    today = OmegaConf.to_container(compose_config(overrides.split()), resolve=True)
    again = OmegaConf.to_container(migrated)
    for content in (today, again):
        for key in ("data_dir", "per_task"):
            content.pop(key, None)
    assert again == today


def test_the_old_translation_values_reach_their_owners_today():
    """The e5355a7 translation file's task.* values, read from the stored config."""
    stored = STORED["task=translation cell=gru trainer.epochs=3"]
    migrated = migrate_stored(OmegaConf.create(stored))
    assert stored["task"]["units"] == migrated.cell.units == 256
    assert stored["task"]["epochs"] == 16 and migrated.trainer.epochs == 3  # the override ran
    assert stored["task"]["dropout"] == migrated.model.dropout == 0.3
    assert stored["task"]["learning_rate"] == migrated.optimizer.learning_rate == 0.002
    assert stored["task"]["clipnorm"] == migrated.trainer.clipnorm == 1.0
    assert stored["task"]["ema_momentum"] == migrated.trainer.ema_momentum == 0.998


def test_a_translation_config_stored_before_its_newer_keys_reads_as_those_runs_ran():
    today = OmegaConf.to_container(compose_config(["task=translation"]), resolve=True)
    for key in stored_before("translation"):
        del today["task"][key]
    del today["trainer"]["ema_momentum"]
    migrated = migrate_stored(OmegaConf.create(today))
    validate(migrated)
    # The values of the runs before each key, as the commits that added them describe them.
    assert migrated.task.tokens == "words" and migrated.task.beam_size == 1
    assert migrated.task.length_penalty == 0.6 and migrated.task.tied_embeddings is False
    assert migrated.task.decode_unknown is True and migrated.task.source_vocabulary_size is None
    assert migrated.trainer.ema_momentum is None


def test_a_cell_stored_at_its_old_path_builds_at_todays_and_hashes_at_the_old():
    today = compose_config(["task=adding", "cell=lru"])
    stored = OmegaConf.to_container(today, resolve=True)
    stored["cell"]["_target_"] = "rnnlab.cells.LRUCell"
    migrated = migrate_stored(OmegaConf.create(stored))
    assert migrated.cell._target_ == "rnnlab.recurrence.cells.LRUCell" == today.cell._target_
    assert config_hash(migrated) == config_hash(today) == HASHES["task=adding cell=lru"]


def test_an_experiments_settings_for_one_task_are_plain_keys_nested_under_it():
    smoke = compose_unresolved(["experiment=smoke"])
    assert per_task_overrides(smoke, "copy_memory") == ["task.delay=20"]
    assert per_task_overrides(smoke, "adding") == []
    # A setting may read a grid axis: it stays an interpolation until the point sets it.
    long_range = compose_unresolved(["experiment=long_range"])
    assert per_task_overrides(long_range, "adding") == ["task.length=${horizon}"]
    # An experiment built on another adds to its settings instead of repeating them.
    equal = compose_unresolved(["experiment=cells_vs_tasks_equal_params"])
    assert per_task_overrides(equal, "adding") == [
        "task.length=100",
        "task.train_examples=10000",
        "trainer.epochs=15",
        "trainer.early_stopping_patience=null",
        "trainer.clipnorm=1.0",
        "model.param_budget=17217",
    ]


def test_rnnlab_train_applies_the_settings_of_its_task_and_keeps_the_users():
    given = ["experiment=long_range", "task=copy_memory", "horizon=1000"]
    cfg = with_experiment_task_overrides(compose_config(given), given)
    assert cfg.task.delay == 1000
    given = ["experiment=cells_vs_tasks", "task=translation", "trainer.epochs=2"]
    assert with_experiment_task_overrides(compose_config(given), given).trainer.epochs == 2
    assert with_experiment_task_overrides(compose_config(given[:2]), given[:2]).trainer.epochs == 6


def test_an_experiments_settings_for_one_cell_reach_that_cells_runs_alone():
    chrono = compose_unresolved(["experiment=copy_memory_chrono"])
    assert per_task_overrides(chrono, "copy_memory", "lstm_chrono") == [
        "cell.bias_initializer.max_steps=220"
    ]
    assert per_task_overrides(chrono, "copy_memory", "lstm") == []
    given = ["experiment=copy_memory_chrono", "cell=lstm_chrono"]
    trained = with_experiment_task_overrides(compose_config(given), given)  # `rnnlab train`'s
    assert trained.cell.bias_initializer.max_steps == 220
    assert (
        "bias_initializer"
        not in compose_config(["experiment=copy_memory_chrono", "cell=lstm"]).cell
    )
    # The grid point trains what `rnnlab train experiment=...` trains: the same hash.
    (point,) = [
        p
        for p in experiment_grid("copy_memory_chrono")
        if p.axes[1:] == ["cell=lstm_chrono", "seed=0"]
    ]
    assert config_hash(compose_config(point.overrides)) == config_hash(trained)
    mine = [*given, "cell.bias_initializer.max_steps=50"]
    mine_cfg = with_experiment_task_overrides(compose_config(mine), mine)
    assert mine_cfg.cell.bias_initializer.max_steps == 50  # the user's value wins


def test_the_rglru_output_gate_came_later_and_keeps_the_hashes_of_the_runs_before_it():
    """Griffin's gate on the RG-LRU was added after RG-LRU grids were stored: a stored config
    without it reads as off and hashes as today's default, while HGRN's own `output_gate`,
    the same key of another cell, stays part of every HGRN hash."""
    today = compose_config(["task=adding", "cell=rglru"])
    stored = OmegaConf.to_container(today, resolve=True)
    del stored["cell"]["output_gate"]
    assert migrate_stored(OmegaConf.create(stored)).cell.output_gate is False
    assert config_hash(OmegaConf.create(stored)) == config_hash(today)
    gated = compose_config(["task=adding", "cell=rglru", "cell.output_gate=true"])
    assert config_hash(gated) != config_hash(today)
    hgrn = OmegaConf.to_container(
        compose_config(["task=adding", "cell=hgrn", "cell.output_gate=false"]), resolve=True
    )
    assert hashed_layout(hgrn)["cell"]["output_gate"] is False
