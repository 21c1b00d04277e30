"""Every change to the config's layout since runs were first stored, in one table.

A stored run keeps two things from the layout it was made in: its `config.yaml` (read
again by `rnnlab reproduce` and `evaluate`) and its config hash (how `rnnlab paper` knows a
grid point is finished). So each change is an entry that works both ways:
`to_today` turns a stored config into today's layout (`migrate_stored`), and `to_hashed`
turns today's config back into the layout hashes were defined in (`hashed_layout`), so a
change of layout changes no run's identity. One kind of entry per kind of change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf


class Migration(Protocol):
    """One change of layout, both ways, on a plain resolved config (changed in place)."""

    def to_today(self, content: dict) -> None: ...

    def to_hashed(self, content: dict) -> None: ...


def plain(cfg: DictConfig) -> dict:
    """The config as a plain dict, interpolations resolved."""
    content = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(content, dict)  # a DictConfig's container is a dict
    return content


def _parent(content: dict, path: str) -> tuple[dict | None, str]:
    """The dict holding `path`'s last key (None where a group is absent), and that key."""
    *groups, key = path.split(".")
    node: Any = content
    for group in groups:
        node = node.get(group) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), key


def _task(content: dict) -> str | None:
    return (content.get("task") or {}).get("name")


@dataclass(frozen=True)
class Added:
    """A key added after runs were stored; `before` computes what those runs did.

    A stored config without the key reads it as `before`. With `hashed_when_set`, the hash
    leaves the key out while it holds `before`, so the grid points stored before it stay
    finished; without, the key is hashed (adding it made new grid points on purpose).
    """

    path: str
    before: Any
    task: str | None = None  # only this task's configs have the key
    hashed_when_set: bool = False
    cell: str | None = None  # only this cell's configs have the key (by `cell.name`)

    def applies(self, content: dict) -> bool:
        cell = (content.get("cell") or {}).get("name")
        return (self.task is None or _task(content) == self.task) and (
            self.cell is None or cell == self.cell
        )

    def to_today(self, content: dict) -> None:
        node, key = _parent(content, self.path)
        if node is not None and self.applies(content):
            node.setdefault(key, self.before)

    def to_hashed(self, content: dict) -> None:
        node, key = _parent(content, self.path)
        if not (self.hashed_when_set and node is not None and self.applies(content)):
            return  # another task's key of the same name (task.source) is its own
        if node.get(key, self.before) == self.before:
            node.pop(key, None)


@dataclass(frozen=True)
class MovedClass:
    """A cell class that moved to another module: stored configs name it at `stored`.

    A stored config builds it at today's path; the hash keeps the stored path."""

    stored: str
    today: str

    def to_today(self, content: dict) -> None:
        cell = content.get("cell") or {}
        if cell.get("_target_") == self.stored:
            cell["_target_"] = self.today

    def to_hashed(self, content: dict) -> None:
        cell = content.get("cell") or {}
        if cell.get("_target_") == self.today:
            cell["_target_"] = self.stored


@dataclass(frozen=True)
class MovedOutOfTask:
    """A setting a task file declared as `task.<key>`, which its owning group read through
    `${oc.select:task.<key>,default}`; today the task file sets the owner itself.

    A stored config carries both (the owner resolved): the owner's value is what ran, so the
    task's copy goes. The hash puts the task's copy back, as its file declared it, where it
    stood then (after the key in `declared`), so every configuration keeps its hash.
    """

    key: str  # was task.<key>
    owner: str  # e.g. trainer.epochs: the one key that holds it today
    declared: dict[str, tuple[Any, str]]  # task -> (the value its file declared, the key before)

    def to_today(self, content: dict) -> None:
        (content.get("task") or {}).pop(self.key, None)

    def to_hashed(self, content: dict) -> None:
        task, name = content.get("task"), _task(content)
        if not isinstance(task, dict) or name not in self.declared:
            return
        value, after = self.declared[name]
        items = list(task.items())
        at = next((i + 1 for i, (key, _) in enumerate(items) if key == after), len(items))
        items.insert(at, (self.key, value))
        task.clear()
        task.update(items)


@dataclass(frozen=True)
class Dropped:
    """A top-level key stored configs carry that today's do not: what it did is already in
    the stored values, and the hash never read it."""

    key: str

    def to_today(self, content: dict) -> None:
        content.pop(self.key, None)

    def to_hashed(self, content: dict) -> None:
        pass


@dataclass(frozen=True)
class Reordered:
    """A top-level key composed at another place than hashes knew it (the defaults list
    changed order): the hash puts it back before `before`. Reading ignores order."""

    key: str
    before: str

    def to_today(self, content: dict) -> None:
        pass

    def to_hashed(self, content: dict) -> None:
        if self.key not in content or self.before not in content:
            return
        moved = content.pop(self.key)
        items = list(content.items())
        at = next(i for i, (key, _) in enumerate(items) if key == self.before)
        items.insert(at, (self.key, moved))
        content.clear()
        content.update(items)


# Each task's keys for a user's own file (`task.source=file:PATH`, #45), with the values
# that read its built-in set as the runs before them did.
FILE_SOURCE_KEYS: dict[str, dict[str, Any]] = {
    "series_classification": {
        "source": "embedded",
        "validation_fraction": 0.2,
        "test_fraction": 0.2,
        "nonfinite": "fail",
    },
    "forecasting": {
        "source": "embedded",
        "time_column": "time",
        "value_columns": None,
        "id_column": None,
        "validation_fraction": 0.15,
        "test_fraction": 0.15,
        "nonfinite": "fail",
    },
    # A user's texts as sentiment's or translation's data (`task.source` was there before).
    "sentiment": {
        "text_column": "text",
        "label_column": "label",
        "validation_fraction": 0.1,
        "test_fraction": 0.1,
        "split_seed": 0,
    },
    "translation": {
        "source_column": "source",
        "target_column": "target",
        "validation_fraction": 0.1,
        "test_fraction": 0.1,
        "split_seed": 0,
    },
}

MIGRATIONS: tuple[Migration, ...] = (
    # Cells moved into rnnlab.recurrence (the packages by role).
    *(
        MovedClass(f"rnnlab.cells.{name}", f"rnnlab.recurrence.cells.{name}")
        for name in ("IndRNNCell", "LRUCell", "MinGRUCell", "MinLSTMCell")
    ),
    # Weight averaging came after the first grids: off, as they ran.
    Added("trainer.ema_momentum", None, hashed_when_set=True),
    # Adam's momentum, searched by learning_rate_importance: Keras's default, as they ran.
    Added("optimizer.beta_1", 0.9, hashed_when_set=True),
    # The short convolution of Mamba's, Griffin's and xLSTM's blocks: none, as they ran.
    Added("model.short_conv", 0, hashed_when_set=True),
    # Griffin's gated branch on the RG-LRU's output: off, as Hawk's cell ran (HGRN's own
    # `output_gate` came with the cell).
    Added("cell.output_gate", False, hashed_when_set=True, cell="rglru"),
    # Experiment-only keys of tuned grids and published claims (never hashed: NOT_HASHED).
    Added("tune", None),
    Added("claims", []),
    Added("per_cell", {}),
    # Translation's options, each added with the value that reproduces the runs before it.
    *(
        Added(f"task.{key}", before, task="translation")
        for key, before in {
            "source_vocabulary_size": None,
            "embedding_dropout": 0.0,
            "label_smoothing": 0.0,
            "decode_unknown": True,
            "beam_size": 1,
            "dictionary_phrases": 0,
            "tokens": "words",
            "translate_unknown": False,
            "lexicon_bias": 0,
            "unicode_words": False,
            "dictionary_glosses": True,
            "lexicon_sources": ["dictionary", "training"],
            "whole_annotations": False,
            "word_dropout": 0.0,
            "length_penalty": 0.6,
            "tied_embeddings": False,
        }.items()
    ),
    # One owner per setting: the task files set the trainer's, cell's, model's and
    # optimizer's keys instead of declaring task.* copies that those groups read.
    MovedOutOfTask("units", "cell.units", {"translation": (256, "source")}),
    MovedOutOfTask(
        "epochs", "trainer.epochs", {"translation": (16, "units"), "captioning": (20, "caption")}
    ),
    MovedOutOfTask("dropout", "model.dropout", {"translation": (0.3, "word_dropout")}),
    MovedOutOfTask("learning_rate", "optimizer.learning_rate", {"translation": (0.002, "dropout")}),
    MovedOutOfTask("clipnorm", "trainer.clipnorm", {"translation": (1.0, "learning_rate")}),
    MovedOutOfTask("ema_momentum", "trainer.ema_momentum", {"translation": (0.998, "clipnorm")}),
    # The task group is composed after the groups it sets values of (it used to be first).
    Reordered("task", before="cell"),
    # Experiments' per-task settings became `per_task` (nested keys, not override strings).
    Dropped("experiment_task_overrides"),
    # A user's own file (#45): the keys that read one; at these values, the built-in set.
    *(
        Added(f"task.{key}", before, task=task, hashed_when_set=True)
        for task, keys in FILE_SOURCE_KEYS.items()
        for key, before in keys.items()
    ),
)


def stored_before(task: str) -> dict[str, Any]:
    """`task.<key>: value` for each key added to a task's file after runs of it were stored:
    what a stored task config without the key means (e.g. `rnnlab predict` of an old run)."""
    return {
        entry.path.removeprefix("task."): entry.before
        for entry in MIGRATIONS
        if isinstance(entry, Added) and entry.task == task
    }


def migrate_stored(cfg: DictConfig) -> DictConfig:
    """A config.yaml stored by an earlier rnnlab, in today's layout (its values resolved)."""
    content = plain(cfg)
    for entry in MIGRATIONS:
        entry.to_today(content)
    return OmegaConf.create(content)


def hashed_layout(content: dict) -> dict:
    """Today's resolved config (a plain dict, changed in place) in the layout hashes were
    defined in."""
    for entry in MIGRATIONS:
        entry.to_hashed(content)
    return content
