"""Shared fixtures: the real composed config, shrunk so a run takes seconds."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rnnlab.config import compose_config  # noqa: E402

# Small enough for seconds per run, large enough that the model learns something.
TINY = ["task.max_examples=256", "trainer.epochs=2", "trainer.batch_size=32", "trainer.verbose=0"]


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """One SQLite store for the session: creating its tables takes seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns')}/mlflow.db"


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def compose(tracking_uri):
    """compose(*overrides): the tiny validated config, recording into the test store."""

    def compose_tiny(*overrides: str):
        return compose_config([*TINY, f"tracking.uri={tracking_uri}", *overrides])

    return compose_tiny
