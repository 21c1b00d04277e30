"""Types and ranges of every group's keys, checked before TensorFlow loads.

Hydra checks that a key exists where the command line sets it; these schemas check what the
files and the command line set together: a mistyped or unknown task key, a negative epoch
count. Each failure is one line naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnlab.config.errors import ConfigError, require
from rnnlab.config.targets import check_target

PRECISIONS = ("float32", "mixed_bfloat16")  # Keras dtype policies
DIRECTIONS = ("maximize", "minimize")
SEED_RANGE = (0, 2**32 - 1)  # what NumPy's and Keras's seeding accept
REQUIRED_GROUPS = ("task", "cell", "optimizer")  # the groups without a schema of their own


# The Keras metrics each task compiles (its `metrics` property), which every epoch logs as
# val_<name> beside val_loss and the test split as test_<name>: what task.metric may name, and
# the scores a sweep can rank trials by. They live in the task modules, which import
# TensorFlow, so they are restated here for the checks that run before it loads;
# tests/test_sweep_file.py holds this table equal to the tasks'.
TASK_KERAS_METRICS = {
    "sentiment": ("accuracy",),
    "adding": (),
    "copy_memory": ("accuracy",),
    "selective_copying": ("accuracy",),
    "associative_recall": ("accuracy",),
    "forecasting": ("mae", "rmse"),
    "series_classification": ("accuracy",),
    "translation": ("token_accuracy",),
    "captioning": ("token_accuracy",),
}
# Scores only the whole test split gives (decoding it): a headline, never a validation score,
# so such a task names a validation_metric to pick its tested epoch by.
TEST_ONLY_METRICS = {"translation": ("bleu",), "captioning": ("bleu",)}


# Ranges as field metadata, checked by check_ranges: `length: int = field(metadata=SIZE)`.
SIZE = {"at_least": 1}  # a count or a width: 0 builds an empty split or a layer of no units
COUNT = {"at_least": 0}  # a count where 0 means none (no samples logged, no phrases added)
FRACTION = {"fraction": True}  # a rate in [0, 1): 1 would drop (or smooth away) everything


def check_ranges(schema: Any, group: str) -> None:
    """The ranges the fields' metadata declare (SIZE, COUNT, FRACTION); None passes where
    the type allows null."""
    for item in fields(schema):
        value = getattr(schema, item.name)
        key = f"{group}.{item.name}"
        if value is None:
            continue
        if "at_least" in item.metadata:
            minimum = item.metadata["at_least"]
            nullable = "null or " if "None" in str(item.type) else ""
            require(value >= minimum, f"{key} must be {nullable}at least {minimum}, got {value}")
        if item.metadata.get("fraction"):
            require(0 <= value < 1, f"{key} must be in [0, 1), got {value}")


@dataclass
class TrainerSchema:
    epochs: int
    batch_size: int
    early_stopping_patience: int | None
    restore_best_weights: bool
    clipnorm: float | None
    verbose: Any
    precision: str
    ema_momentum: float | None

    def __post_init__(self) -> None:
        require(self.epochs >= 1, f"trainer.epochs must be at least 1, got {self.epochs}")
        require(
            self.batch_size >= 1, f"trainer.batch_size must be at least 1, got {self.batch_size}"
        )
        require(
            self.early_stopping_patience is None or self.early_stopping_patience >= 0,
            "trainer.early_stopping_patience must be null or >= 0, "
            f"got {self.early_stopping_patience}",
        )
        require(
            self.clipnorm is None or self.clipnorm > 0,
            f"trainer.clipnorm must be null or > 0, got {self.clipnorm}",
        )
        require(
            self.ema_momentum is None or 0 < self.ema_momentum < 1,
            f"trainer.ema_momentum must be null or in (0, 1), got {self.ema_momentum}",
        )
        require(
            self.verbose in ("auto", 0, 1, 2),
            f"trainer.verbose must be one of auto, 0, 1, 2; got {self.verbose}",
        )
        require(
            self.precision in PRECISIONS,
            f"trainer.precision must be one of {', '.join(PRECISIONS)}; got {self.precision}",
        )


@dataclass
class ModelSchema:
    layers: int
    dropout: float
    short_conv: int
    bidirectional: bool
    fused: bool
    unroll: bool
    param_budget: int | None

    def __post_init__(self) -> None:
        require(self.layers >= 1, f"model.layers must be at least 1, got {self.layers}")
        require(
            self.param_budget is None or self.param_budget >= 1,
            f"model.param_budget must be null or a positive integer, got {self.param_budget}",
        )
        require(0 <= self.dropout < 1, f"model.dropout must be in [0, 1), got {self.dropout}")
        require(
            self.short_conv >= 0,
            f"model.short_conv is a width in steps (0: none), got {self.short_conv}",
        )


@dataclass
class ProbeSchema:
    enabled: bool
    every_n_epochs: int
    layers: Any
    examples: int
    explode_norm: float
    plots: bool

    def __post_init__(self) -> None:
        require(
            self.every_n_epochs >= 1,
            f"probe.every_n_epochs must be at least 1, got {self.every_n_epochs}",
        )
        require(self.examples >= 1, f"probe.examples must be at least 1, got {self.examples}")


@dataclass
class TrackingSchema:
    uri: str
    experiment: str
    run_name: str | None
    parent_run_id: str | None
    log_model: bool
    system_metrics: bool
    system_metrics_seconds: float

    def __post_init__(self) -> None:
        require(
            self.system_metrics_seconds > 0,
            f"tracking.system_metrics_seconds must be > 0, got {self.system_metrics_seconds}",
        )
        require(
            self.experiment.strip() != "",
            "tracking.experiment must name an MLflow experiment, got an empty name",
        )


# The task files (conf/task/): the keys every task has, then each task's own.


@dataclass
class TaskSchema:
    name: str
    max_examples: int | None = field(metadata=SIZE)  # a cap of 0 would leave every split empty
    metric: str
    direction: str

    def __post_init__(self) -> None:
        check_ranges(self, "task")
        require(
            self.direction in DIRECTIONS,
            f"task.direction must be maximize or minimize, got {self.direction}",
        )


@dataclass
class GeneratedSchema(TaskSchema):
    """A task generated from the seed: how many examples each split draws."""

    train_examples: int = field(metadata=SIZE)
    validation_examples: int = field(metadata=SIZE)
    test_examples: int = field(metadata=SIZE)


@dataclass
class AddingSchema(GeneratedSchema):
    length: int = field(metadata=SIZE)


@dataclass
class CopyMemorySchema(GeneratedSchema):
    delay: int = field(metadata=SIZE)


def check_file_source(source: str, choices: tuple[str, ...] = ("embedded",)) -> None:
    """`task.source` is a built-in set or `file:PATH` (whose file the task checks as it loads)."""
    require(
        source in choices or (source.startswith("file:") and source != "file:"),
        f"task.source must be {' or '.join(choices)} or file:PATH, got '{source}'",
    )


def check_split_fractions(validation: float, test: float) -> None:
    """The shares of a file's cases dealt to validation and test: each a part, some left over."""
    require(
        validation > 0 and test > 0 and validation + test < 1,
        "task.validation_fraction and task.test_fraction must be above 0 and sum below 1, "
        f"got {validation} and {test}",
    )


@dataclass
class SelectiveCopyingSchema(GeneratedSchema):
    length: int = field(metadata=SIZE)
    tokens: int = field(metadata=SIZE)
    vocabulary_size: int = field(metadata=SIZE)


@dataclass
class AssociativeRecallSchema(GeneratedSchema):
    length: int = field(metadata=SIZE)
    pairs: int = field(metadata=SIZE)
    queries: int = field(metadata=SIZE)
    vocabulary_size: int = field(metadata=SIZE)


@dataclass
class ForecastingSchema(TaskSchema):
    source: str
    series: str
    time_column: str
    value_columns: list[str] | None
    id_column: str | None
    window: int = field(metadata=SIZE)
    horizon: int = field(metadata=SIZE)
    validation_fraction: float = field(metadata=FRACTION)
    test_fraction: float = field(metadata=FRACTION)
    nonfinite: str

    def __post_init__(self) -> None:
        super().__post_init__()
        check_file_source(self.source)
        check_split_fractions(self.validation_fraction, self.test_fraction)
        require(
            self.nonfinite in ("fail", "drop", "interpolate"),
            f"task.nonfinite must be fail, drop or interpolate, got '{self.nonfinite}'",
        )
        require(
            self.value_columns is None or len(self.value_columns) > 0,
            "task.value_columns must name a column, or be null for every column but time and id",
        )


def check_file_split(task: Any) -> None:
    """A file without a split of its own is dealt at these fractions: train keeps the rest."""
    held_out = task.validation_fraction + task.test_fraction
    require(
        held_out < 1,
        f"task.validation_fraction + task.test_fraction must be below 1 (the training split "
        f"takes the rest), got {held_out:g}",
    )


@dataclass
class SentimentSchema(TaskSchema):
    source: str
    text_column: str
    label_column: str
    validation_fraction: float = field(metadata=FRACTION)
    test_fraction: float = field(metadata=FRACTION)
    split_seed: int = field(metadata=COUNT)
    vocabulary_size: int = field(metadata=SIZE)
    sequence_length: int = field(metadata=SIZE)
    embedding_dim: int = field(metadata=SIZE)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_file_split(self)
        require(
            self.text_column != self.label_column,
            f"task.text_column and task.label_column name one column, '{self.text_column}'",
        )


@dataclass
class SeriesClassificationSchema(TaskSchema):
    source: str
    dataset: str
    validation_fraction: float = field(metadata=FRACTION)
    test_fraction: float = field(metadata=FRACTION)
    nonfinite: str

    def __post_init__(self) -> None:
        super().__post_init__()
        check_file_source(self.source)
        check_split_fractions(self.validation_fraction, self.test_fraction)
        require(
            self.nonfinite in ("fail", "drop"),
            f"task.nonfinite must be fail or drop, got '{self.nonfinite}'",
        )


@dataclass
class CaptioningSchema(TaskSchema):
    caption: str
    vocabulary_size: int = field(metadata=SIZE)
    target_length: int = field(metadata=SIZE)
    embedding_dim: int = field(metadata=SIZE)
    context_dim: int = field(metadata=SIZE)
    samples: int = field(metadata=COUNT)
    validation_metric: str


@dataclass
class TranslationSchema(TaskSchema):
    source: str
    source_column: str
    target_column: str
    validation_fraction: float = field(metadata=FRACTION)
    test_fraction: float = field(metadata=FRACTION)
    split_seed: int = field(metadata=COUNT)
    tokens: str
    vocabulary_size: int = field(metadata=SIZE)
    source_vocabulary_size: int | None = field(metadata=SIZE)
    source_length: int = field(metadata=SIZE)
    target_length: int = field(metadata=SIZE)
    embedding_dim: int = field(metadata=SIZE)
    unicode_words: bool
    attention: str
    attention_units: int = field(metadata=SIZE)
    tied_embeddings: bool
    embedding_dropout: float = field(metadata=FRACTION)
    word_dropout: float = field(metadata=FRACTION)
    label_smoothing: float = field(metadata=FRACTION)
    decode_unknown: bool
    translate_unknown: bool
    whole_annotations: bool
    dictionary_glosses: bool
    lexicon_bias: int
    lexicon_sources: list[str]
    beam_size: int = field(metadata=SIZE)
    length_penalty: float
    dictionary_phrases: int = field(metadata=COUNT)
    samples: int = field(metadata=COUNT)
    validation_metric: str

    def __post_init__(self) -> None:
        super().__post_init__()
        check_file_split(self)
        require(
            self.source_column != self.target_column,
            f"task.source_column and task.target_column name one column, '{self.source_column}'",
        )


SCHEMAS = {
    "trainer": TrainerSchema,
    "model": ModelSchema,
    "probe": ProbeSchema,
    "tracking": TrackingSchema,
}
TASK_SCHEMAS = {
    "adding": AddingSchema,
    "captioning": CaptioningSchema,
    "copy_memory": CopyMemorySchema,
    "selective_copying": SelectiveCopyingSchema,
    "associative_recall": AssociativeRecallSchema,
    "forecasting": ForecastingSchema,
    "sentiment": SentimentSchema,
    "series_classification": SeriesClassificationSchema,
    "translation": TranslationSchema,
}


def is_number(value: Any) -> bool:
    """An int or a float, not a bool (YAML's `true` is an int to Python)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_against(schema: type, node: DictConfig, group: str) -> None:
    """Merge `node` into `schema`'s structure: an unknown key, a wrong type or a range fails."""
    try:
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except OmegaConfBaseException as error:
        raise ConfigError(f"{group}.{error.full_key}: {str(error).splitlines()[0]}") from None


def validate(cfg: DictConfig) -> None:
    """Check types and ranges of the resolved config; raise ConfigError with one line."""
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as error:
        raise ConfigError(str(error).splitlines()[0]) from None
    for key in (*REQUIRED_GROUPS, *SCHEMAS, "seed"):  # `~cell` deletes a group
        require(key in cfg, f"{key} is missing; a run needs one (conf/config.yaml's defaults)")
    for group, schema in SCHEMAS.items():
        check_against(schema, cfg[group], group)
    # A task outside the registry's files is reported by the registry, by name.
    task_schema = TASK_SCHEMAS.get(OmegaConf.select(cfg, "task.name"))
    if task_schema is not None:
        check_against(task_schema, cfg.task, "task")
    else:
        require(
            cfg.task.get("direction") in DIRECTIONS,
            f"task.direction must be maximize or minimize, got {cfg.task.get('direction')}",
        )
    check_metric(cfg.task)
    for key in ("_target_", "units"):
        require(key in cfg.cell, f"cell needs a '{key}' key (see conf/cell/lstm.yaml)")
    for group in ("cell", "optimizer"):
        for key, target in targets_in(cfg[group], group):
            check_target(key, target)
    require(
        isinstance(cfg.cell.units, int) and cfg.cell.units >= 1,
        f"cell.units must be a positive integer, got {cfg.cell.units}",
    )
    # Cells with heads (xLSTM's) split their units evenly; a budget picks multiples of heads.
    heads = cfg.cell.get("heads")
    if heads is not None:
        require(
            isinstance(heads, int) and not isinstance(heads, bool) and heads >= 1,
            f"cell.heads must be a positive integer, got {heads}",
        )
        require(
            cfg.cell.units % heads == 0 or cfg.model.get("param_budget") is not None,
            f"cell.units ({cfg.cell.units}) must be a multiple of cell.heads ({heads})",
        )
    # Cells are any Keras cell, so they have no schema: the rates the built-in ones share.
    for key in ("dropout", "recurrent_dropout"):
        rate = cfg.cell.get(key)
        require(
            rate is None or (is_number(rate) and 0 <= rate < 1),
            f"cell.{key} must be in [0, 1), got {rate}",
        )
    learning_rate = cfg.optimizer.get("learning_rate")
    require(
        learning_rate is None or (is_number(learning_rate) and learning_rate > 0),
        f"optimizer.learning_rate must be a positive number, got {learning_rate}",
    )
    if isinstance(learning_rate, int):  # `learning_rate=1`: Keras's optimizers want a float
        cfg.optimizer.learning_rate = float(learning_rate)
    require(
        isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool),
        f"seed must be an integer, got {cfg.seed!r}",
    )
    low, high = SEED_RANGE
    require(low <= cfg.seed <= high, f"seed must be in [{low}, {high}], got {cfg.seed}")
    require(
        "experiment_task_overrides" not in cfg,
        "experiment_task_overrides is now per_task, with nested keys: "
        "per_task: {copy_memory: {task: {delay: 20}}} (see conf/experiment/smoke.yaml)",
    )


def check_metric(task: DictConfig) -> None:
    """task.metric is a score the task logs on its test split, and the score that picks the
    tested epoch (validation_metric, else the metric) one it logs every epoch: `task.metric=f1`
    trained to the end and then failed on a missing test_f1."""
    if task.name not in TASK_KERAS_METRICS:
        return  # a task outside the registry is reported by the registry, by name
    scores = ["loss", *TASK_KERAS_METRICS[task.name]]
    headlines = [*scores, *TEST_ONLY_METRICS.get(task.name, ())]
    require(
        task.metric in headlines,
        f"task.metric: task {task.name} logs no test_{task.metric}; "
        f"choose one of: {', '.join(headlines)}",
    )
    selection = task.get("validation_metric")
    key = "task.validation_metric" if selection else "task.metric"
    require(
        (selection or task.metric) in scores,
        f"{key}: task {task.name} logs no val_{selection or task.metric} every epoch to pick the "
        f"tested epoch by; choose one of: {', '.join(scores)}",
    )


def targets_in(node: Any, path: str) -> list[tuple[str, Any]]:
    """Every `_target_` in a config node (a cell's initializers have their own), by key."""
    if isinstance(node, DictConfig):
        found = [(f"{path}._target_", node["_target_"])] if "_target_" in node else []
        for key, value in node.items():
            if key != "_target_":
                found += targets_in(value, f"{path}.{key!s}")
        return found
    return []
