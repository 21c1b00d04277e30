"""One process at a time: an exclusive lock on a file, for work that processes on one host share.

A native build (one compile per CPU and TensorFlow, however many processes start at once)
and a read-then-write of a SQLite study (which SQLite does not lock row by row) both need it.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Holds `lock_path` (created if absent) until the block ends; others wait their turn.

    The kernel releases the lock when its holder dies, so a killed process blocks no one.
    """
    with Path(lock_path).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
