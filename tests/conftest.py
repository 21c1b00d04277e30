"""Shared fixtures: the real composed config, shrunk so a run takes seconds."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Hypothesis keeps caches (and, unless a test says database=None, its examples) in
# .hypothesis/ of the working directory: out of the tree, in the system's temporary folder.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "rnnlab-hypothesis")
)

from rnnlab.config import compose_config  # noqa: E402

# Small enough for seconds per run, large enough that the model learns something. Storing
# each run's model costs about a second; the tests of stored models turn it back on.
TINY = [
    "task.max_examples=256",
    "trainer.epochs=2",
    "trainer.batch_size=32",
    "trainer.verbose=0",
    "tracking.log_model=false",
]


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


POSTGRES_URL_VARIABLE = "RNNLAB_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The test PostgreSQL server (`.ci/run` starts one); required in CI, skipped elsewhere."""
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        reason = (
            f"no PostgreSQL server: set {POSTGRES_URL_VARIABLE} to the URL that "
            "`scripts/local_postgres.sh start /tmp/rnnlab-postgres` prints"
        )
        unavailable(reason)
    return url


def unavailable(reason: str):
    """Skip a test that needs what this machine lacks; in CI, where .ci/run provides it, fail."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def native_ops():
    """rnnlab's native recurrence ops (make install builds them); required in CI."""
    from rnnlab.recurrence.native import recurrence_ops

    ops = recurrence_ops()
    if ops is None:
        unavailable("rnnlab's native ops did not build here: see the warning above")
    return ops


@pytest.fixture
def postgres_database(postgres_server_url):
    """new_database(): the URL of a fresh empty database on the test server, dropped after."""
    import uuid

    import psycopg

    admin_url = postgres_server_url.replace("postgresql+psycopg://", "postgresql://")
    created: list[str] = []

    def new_database() -> str:
        name = f"rnnlab_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return postgres_server_url.rsplit("/", 1)[0] + f"/{name}"

    yield new_database
    with psycopg.connect(admin_url, autocommit=True) as connection:
        for name in created:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """A SLURM cluster to submit to (`.ci/run` starts scripts/local_slurm.sh); required in CI,
    skipped elsewhere. Its slurm.conf path."""
    import shutil
    import subprocess

    conf = os.environ.get("SLURM_CONF", "")
    if not shutil.which("sbatch") or not conf:
        unavailable(
            "no SLURM cluster: `scripts/local_slurm.sh start /tmp/rnnlab-slurm` starts one "
            "and prints the path to export as SLURM_CONF"
        )
    if subprocess.run(["sinfo", "--noheader"], capture_output=True).returncode != 0:
        unavailable(f"SLURM_CONF={conf}, but sinfo cannot reach its controller")
    return conf
