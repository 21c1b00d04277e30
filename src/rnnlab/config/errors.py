"""The one error a config mistake raises: a line the CLI prints as it is."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config mistake, reported to the user as one line."""


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds."""
    if not condition:
        raise ConfigError(message)
