"""The one error a config mistake raises: a line the CLI prints as it is."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config mistake, reported to the user as one line.

    Its text often quotes what the user typed, which may hold a newline (an override, a key
    of a sweep file): such characters are shown escaped (`\\n`), so the line stays one.
    """

    def __str__(self) -> str:
        return printable(super().__str__())


def printable(text: str) -> str:
    """text with each character that is not printable (newlines, tabs, NUL) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds."""
    if not condition:
        raise ConfigError(message)


def one_line(error: BaseException) -> str:
    """The error's first line, with its root cause's first line where that says why.

    Hydra puts the reason on a later line or in the cause: `Could not override 'task.lenght'.`
    comes from `Key 'lenght' is not in struct`, and `Error in call to target '...Adam':` from
    Keras's TypeError.
    """

    def first_line(exception: BaseException) -> str:
        text = str(exception).strip()
        return text.splitlines()[0].strip() if text else type(exception).__name__

    line = first_line(error)
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    reason = first_line(root)
    if root is error or reason in line:
        return line
    if line.endswith("."):
        return f"{line} {reason}"
    return f"{line.rstrip(':')}: {type(root).__name__}: {reason}"
