"""The config tree on disk: where it is, its groups, and which choices a group offers.

`CONF_DIR` is read from this module at call time (`files.CONF_DIR`), so a test can point
composition at a copy of the tree.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

from rnnlab.config.errors import ConfigError

# src/rnnlab/config/files.py: three folders up is the project (conf/, data/, mlruns/).
PROJECT_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = PROJECT_ROOT / "conf"


def group_choices(group: str) -> list[str]:
    """The options of a config group, e.g. `cell` -> ['gru', 'lstm', 'simple_rnn']."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def is_group(key: str) -> bool:
    """Whether `key` names a config group (a folder of conf/), not a value."""
    return (CONF_DIR / key).is_dir()


def parse_overrides(overrides: list[str]) -> list[Override]:
    """Hydra's parse of command-line overrides; a malformed one is one line naming it.

    Hydra's own first line for a character its grammar does not take is the lexer's name
    and the override (`LexerNoViableAltException: task=é`), its hint two lines below.
    """
    parser = OverridesParser.create()
    try:
        return parser.parse_overrides(list(overrides))
    except HydraException as error:
        line = (str(error).splitlines() or [""])[0]
    if not line.startswith("LexerNoViableAltException"):
        raise ConfigError(line)
    for text in overrides:  # which one: the lexer's line may be cut by a newline in it
        try:
            parser.parse_overrides([text])
        except HydraException:
            raise ConfigError(
                f"cannot parse the override '{text}': quote a value with spaces or symbols "
                "(key='...'); grammar: https://hydra.cc/docs/advanced/override_grammar/basic/"
            ) from None
    raise ConfigError(line)


def check_overrides(overrides: list[str]) -> None:
    """Reject an unknown group choice such as `cell=foo`, naming the allowed ones."""
    for override in parse_overrides(overrides):
        group = override.key_or_group
        if override.is_delete() or not is_group(group):
            continue
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [str(override.value())]
        allowed = group_choices(group)
        for value in values:
            if value not in allowed:
                raise ConfigError(f"unknown {group} '{value}'; choose one of: {', '.join(allowed)}")
