"""Compose and validate run configs before TensorFlow is imported, so mistakes fail in a second.

Hydra composes `conf/`; this package adds what Hydra does not check and what a run's
identity needs. One module per job:

- `files`: where the config tree is and which choices each group offers;
- `compose`: Hydra's composition, and an experiment's settings for one task;
- `fast_overrides`: many compositions at once, as Hydra would make them;
- `schemas`: types and ranges of every group's keys, one line per mistake;
- `targets`: a `_target_` checked against its module's source, without importing it;
- `identity`: the config hash that identifies what a run computes;
- `migrations`: the one table of layout changes, for the hash and for stored configs.

Import from here: these names are the package's public API. Nothing here imports
TensorFlow, Keras or MLflow.
"""

from rnnlab.config.compose import (
    check_first_point,
    compose_config,
    compose_unresolved,
    per_task_overrides,
    with_experiment_task_overrides,
)
from rnnlab.config.errors import ConfigError, one_line
from rnnlab.config.fast_overrides import (
    compose_many,
    composed_groups,
    config_files_fingerprint,
    split_overrides,
)
from rnnlab.config.files import CONF_DIR, PROJECT_ROOT, check_overrides, group_choices
from rnnlab.config.identity import NOT_HASHED, cell_name, config_hash
from rnnlab.config.migrations import MIGRATIONS, migrate_stored, stored_before
from rnnlab.config.schemas import (
    PRECISIONS,
    SCHEMAS,
    TASK_KERAS_METRICS,
    TASK_SCHEMAS,
    validate,
)

__all__ = [
    "CONF_DIR",
    "MIGRATIONS",
    "NOT_HASHED",
    "PRECISIONS",
    "PROJECT_ROOT",
    "SCHEMAS",
    "TASK_KERAS_METRICS",
    "TASK_SCHEMAS",
    "ConfigError",
    "cell_name",
    "check_first_point",
    "check_overrides",
    "compose_config",
    "compose_many",
    "compose_unresolved",
    "composed_groups",
    "config_files_fingerprint",
    "config_hash",
    "group_choices",
    "migrate_stored",
    "one_line",
    "per_task_overrides",
    "split_overrides",
    "stored_before",
    "validate",
    "with_experiment_task_overrides",
]
