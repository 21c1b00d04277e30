"""Which worker trains which grid point: one claim per point, in a shared database.

The workers of `rnnlab paper` (processes on one machine, or machines pointed at one
PostgreSQL database) take grid points by claiming them. A claim is a single SQL statement
that succeeds for exactly one worker, on SQLite and PostgreSQL alike: an INSERT of the
point's key, or an UPDATE conditioned on the attempt number the worker read. (Optuna's
RDB storage reads a trial's state and then writes it, which on SQLite lets two workers
take the same waiting trial.)

A claim names its owner (host, pid, process start) and beats while the point trains, as
runs do (liveness.py). A claim whose owner died is taken over by the next worker that
looks, at most `retries` times; the point's MLflow run is then failed with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from rnnlab.records import names
from rnnlab.records.liveness import beating, death_reason, owner_tags, process_is_alive

RUNNING, FINISHED, FAILED = "running", "finished", "failed"

TABLE = sa.Table(
    "rnnlab_grid_claims",
    sa.MetaData(),
    sa.Column("grid", sa.String(64), primary_key=True),
    sa.Column("point", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.String(16), nullable=False),
    sa.Column("started", sa.String(32), nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
)


@dataclass(frozen=True)
class Claim:
    """A point's row: who holds it, in which state, since when."""

    point: str
    state: str
    attempt: int
    host: str
    pid: str
    started: str
    heartbeat: float
    updated: float
    reason: str

    def owner_alive(self, now: float) -> bool:
        return process_is_alive(self.host, self.pid, self.started, self.heartbeat, now)


def grid_key(experiment: str, tracking_uri: str) -> str:
    """The same experiment recorded in two stores is two grids."""
    return hashlib.sha256(f"{experiment}\n{tracking_uri}".encode()).hexdigest()[:32]


def engine_for(url: str) -> sa.Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Several workers write to one file: wait for the lock instead of failing at once.
        return sa.create_engine(url, connect_args={"timeout": 60})
    return sa.create_engine(url, pool_pre_ping=True)


class GridClaims:
    """The claims of one grid: take a point, beat while it trains, settle it."""

    def __init__(self, url: str, grid: str, retries: int = 2) -> None:
        self.engine = engine_for(url)
        self.grid = grid
        self.retries = retries
        try:
            TABLE.create(self.engine, checkfirst=True)
        except (OperationalError, ProgrammingError, IntegrityError):
            # Another worker created it between the check and the CREATE.
            if not sa.inspect(self.engine).has_table(TABLE.name):
                raise

    def claims(self) -> dict[str, Claim]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(TABLE).where(TABLE.c.grid == self.grid))
            return {
                row.point: Claim(**{k: v for k, v in row._asdict().items() if k != "grid"})
                for row in rows
            }

    def take(self, point: str, since: float, claim: Claim | None) -> tuple[bool, str]:
        """Claim the point for this process: (taken, why its previous owner lost it, if this
        call found that out: a death, or giving up on the point).

        `claim` is the row as last read (None: no row). A point is free when nobody has
        claimed it, when its owner died, or when it was settled before `since` (the start of
        this command): a rerun trains again what failed, and what MLflow no longer holds.
        """
        now = time.time()
        owner = owner_tags()
        values = {
            "state": RUNNING,
            "host": socket.gethostname(),
            "pid": owner[names.PID],
            "started": owner[names.PROCESS_STARTED],
            "heartbeat": now,
            "updated": now,
            "reason": "",
        }
        if claim is None:
            try:
                with self.engine.begin() as connection:
                    connection.execute(
                        TABLE.insert().values(grid=self.grid, point=point, attempt=1, **values)
                    )
            except IntegrityError:  # another worker inserted it first
                return False, ""
            return True, ""
        died = claim.state == RUNNING and not claim.owner_alive(now)
        if not died and not (claim.state != RUNNING and claim.updated < since):
            return False, ""
        if not died:  # settled by an earlier command: a fresh start
            return self._replace(claim, attempt=1, **values), ""
        reason = death_reason(claim.host, claim.pid)
        if claim.attempt > self.retries:
            gave_up = f"{reason}; given up after {claim.attempt} attempts"
            given_up = self._replace(claim, state=FAILED, reason=gave_up, updated=now)
            return False, gave_up if given_up else ""
        taken = self._replace(claim, attempt=claim.attempt + 1, **values)
        return taken, reason if taken else ""

    def settle(self, point: str, state: str, reason: str = "") -> None:
        """This process is done with the point: FINISHED, or FAILED with its reason."""
        with self.engine.begin() as connection:
            connection.execute(
                TABLE.update()
                .where(*self._mine(point))
                .values(state=state, reason=reason[:1000], updated=time.time())
            )

    def _mine(self, point: str) -> tuple:
        """The point's row while this process holds it (not after another took it over)."""
        return (
            TABLE.c.grid == self.grid,
            TABLE.c.point == point,
            TABLE.c.host == socket.gethostname(),
            TABLE.c.pid == owner_tags()[names.PID],
        )

    def _replace(self, claim: Claim, **values) -> bool:
        """Write the row only if it is still as it was read: of several workers that read
        the same row, exactly one succeeds."""
        with self.engine.begin() as connection:
            result = connection.execute(
                TABLE.update()
                .where(
                    TABLE.c.grid == self.grid,
                    TABLE.c.point == claim.point,
                    TABLE.c.state == claim.state,
                    TABLE.c.attempt == claim.attempt,
                    TABLE.c.updated == claim.updated,
                )
                .values(**values)
            )
            return result.rowcount == 1

    @contextlib.contextmanager
    def beating(self, point: str) -> Iterator[None]:
        """Keep the claim's heartbeat fresh while the point trains, for workers elsewhere."""

        def beat() -> None:
            with self.engine.begin() as connection:
                connection.execute(
                    TABLE.update().where(*self._mine(point)).values(heartbeat=time.time())
                )

        with beating(beat):
            yield
