"""What translation's options may be, checked when the task is made: a wrong value, or an
option whose needs the config lacks, is a one-line error before any data is read.

`option(key)` gives a key's value, or what runs stored before the key did
(`translation.STORED_BEFORE`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from rnnlab.config import ConfigError
from rnnlab.tasks.data_files import is_file_source

LEXICON_SOURCES = ("dictionary", "training")
TOKENS = ("words", "subwords")


def check_options(cfg: DictConfig, option: Callable[[str], Any]) -> None:
    """Raise a ConfigError naming the first translation option whose value is wrong."""
    if option("tokens") not in TOKENS:
        raise ConfigError(
            f"task.tokens must be one of {', '.join(TOKENS)}; got {option('tokens')!r}"
        )
    check_dictionary_needs(cfg, option)
    unknown_sources = set(option("lexicon_sources")) - set(LEXICON_SOURCES)
    if unknown_sources or not option("lexicon_sources"):
        raise ConfigError(
            f"task.lexicon_sources must list some of {', '.join(LEXICON_SOURCES)}; "
            f"got {list(option('lexicon_sources'))}"
        )
    for key, least in (("lexicon_bias", 0), ("beam_size", 1)):
        value = option(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"task.{key} must be a whole number ≥ {least}; got {value}")
    tied = option("tied_embeddings")
    if not isinstance(tied, bool):
        raise ConfigError(f"task.tied_embeddings must be true or false; got {tied!r}")
    penalty = option("length_penalty")
    if isinstance(penalty, bool) or not isinstance(penalty, int | float) or penalty < 0:
        raise ConfigError(f"task.length_penalty must be a number ≥ 0; got {penalty}")


def check_dictionary_needs(cfg: DictConfig, option: Callable[[str], Any]) -> None:
    """The options that read the Ding dictionary need it, and those that read it through
    the attention need both: one error names every option on that lacks a need."""
    attention, ding, words = (
        "task.attention=additive or dot",
        "task.source=embedded (Ding)",
        "task.tokens=words",
    )
    missing = {
        attention: cfg.attention == "none",
        # A user's file turns the dictionary's options off (translation.WITHOUT_DICTIONARY).
        ding: cfg.source != "embedded" and not is_file_source(cfg.source),
        words: option("tokens") != "words",
    }
    needs = {  # option: (its value when off, what it needs)
        "translate_unknown": ("false", (attention, ding, words)),
        "lexicon_bias": ("0", (attention, ding, words)),
        "dictionary_phrases": ("0", (ding,)),
    }
    for need in (need for need, lacking in missing.items() if lacking):
        on = [key for key, (_, its) in needs.items() if need in its and option(key)]
        if on:
            options = " and ".join(f"task.{key}" for key in on)
            fixes = " ".join(f"task.{key}={needs[key][0]}" for key in on)
            verb = "needs" if len(on) == 1 else "need"
            raise ConfigError(f"{options} {verb} {need}; or set {fixes}")
