"""Claims on grid points: exactly one worker gets each point, on SQLite and PostgreSQL, and a
dead owner's point is taken over once."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from rnnlab.experiments.claims import FAILED, FINISHED, RUNNING, TABLE, GridClaims
from rnnlab.records import liveness


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/claims.db"
    return request.getfixturevalue("postgres_database")()


def set_owner(claims: GridClaims, point: str, **columns) -> None:
    """Rewrite a claim's row as if another process (here or elsewhere) held it."""
    with claims.engine.begin() as connection:
        connection.execute(
            TABLE.update()
            .where(TABLE.c.grid == claims.grid, TABLE.c.point == point)
            .values(**columns)
        )


def test_a_point_goes_to_one_worker_and_settles(storage):
    first, second = GridClaims(storage, "grid-a"), GridClaims(storage, "grid-a")
    since = time.time()
    assert first.take("p1", since, None) == (True, "")
    assert second.take("p1", since, None) == (False, ""), "the insert lost to the first"
    assert second.take("p1", since, second.claims()["p1"]) == (False, ""), "its owner lives"
    first.settle("p1", FINISHED)
    claim = second.claims()["p1"]
    assert claim.state == FINISHED and claim.attempt == 1
    assert second.take("p1", since, claim) == (False, ""), "settled by this command"
    assert GridClaims(storage, "grid-b").claims() == {}, "another grid's claims are its own"


def test_a_point_settled_before_this_command_is_trained_again(storage):
    claims = GridClaims(storage, "grid")
    claims.take("p1", time.time(), None)
    claims.settle("p1", FAILED, "loss became nan")
    rerun = time.time() + 1
    assert claims.take("p1", rerun, claims.claims()["p1"]) == (True, "")
    assert claims.claims()["p1"].state == RUNNING


def test_a_dead_owners_point_is_taken_over_once_then_given_up(storage):
    claims, rival = GridClaims(storage, "grid", retries=1), GridClaims(storage, "grid")
    since = time.time()
    claims.take("p1", since, None)
    set_owner(claims, "p1", started="12.00")  # this pid, but another (dead) process
    read = claims.claims()["p1"]
    taken, reason = claims.take("p1", since, read)
    assert taken and "died" in reason
    assert rival.take("p1", since, read) == (False, ""), "the row changed since it was read"
    assert claims.claims()["p1"].attempt == 2
    set_owner(claims, "p1", started="12.00")
    taken, reason = claims.take("p1", since, claims.claims()["p1"])
    assert not taken and "died" in reason
    claim = claims.claims()["p1"]
    assert claim.state == FAILED and "given up after 2 attempts" in claim.reason


def test_a_claim_elsewhere_lives_while_it_beats(storage, monkeypatch):
    claims = GridClaims(storage, "grid")
    since = time.time()
    claims.take("p1", since, None)
    stale = time.time() - liveness.MISSED_BEATS * liveness.HEARTBEAT_SECONDS - 5
    set_owner(claims, "p1", host="another-node", heartbeat=time.time())
    assert claims.take("p1", since, claims.claims()["p1"]) == (False, "")
    set_owner(claims, "p1", heartbeat=stale)
    taken, reason = claims.take("p1", since, claims.claims()["p1"])
    assert taken and "sent no heartbeat" in reason and "another-node" in reason


def test_the_heartbeat_of_a_training_point_moves(storage, monkeypatch):
    monkeypatch.setattr(liveness, "HEARTBEAT_SECONDS", 0.05)
    claims = GridClaims(storage, "grid")
    claims.take("p1", time.time(), None)
    before = claims.claims()["p1"].heartbeat
    with claims.beating("p1"):
        time.sleep(0.5)
    assert claims.claims()["p1"].heartbeat > before


RACER = """
import json, sys, time
from rnnlab.experiments.claims import GridClaims
claims = GridClaims(sys.argv[1], "race")
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # all racers begin together
won = [p for p in map(str, range(40)) if claims.take(p, start, claims.claims().get(p))[0]]
print(json.dumps(won), flush=True)
sys.stdin.read()  # alive until every racer is done: a dead owner's point is free to take
"""


@pytest.mark.slow
def test_racing_processes_claim_every_point_exactly_once(storage):
    GridClaims(storage, "race")  # the table exists before the race
    start = time.time() + 4  # after the racers' imports (about 2.5 s)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, storage, str(start)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    # On a loaded machine a racer may start late; the others stay alive until it is done.
    won = []
    for racer in racers:
        line = racer.stdout.readline()
        assert line, racer.communicate(timeout=120)[1][-2000:]
        won.extend(json.loads(line))
    for racer in racers:
        _, errors = racer.communicate(timeout=120)
        assert racer.returncode == 0, errors[-2000:]
    assert sorted(won, key=int) == [str(p) for p in range(40)], "each point once"
    engine = sa.create_engine(storage)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(sa.func.count()).select_from(TABLE)).scalar()
    engine.dispose()
    assert rows == 40
