"""extend_claims keeps current claims hidden longer and ignores stale ones,
including one another worker is re-claiming at that very moment."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace

import psycopg
import pytest

from tests.acceptance.harness import wait_until
from tests.sql.helpers import (
    Claim,
    assert_invariants,
    blocked_or_done,
    claim,
    define,
    expire,
    start,
    visible_in,
    vt_of,
)


def extend(conn: psycopg.Connection, claims: list[Claim], seconds: int) -> int:
    row = conn.execute(
        "SELECT flowworker.extend_claims('ext', %s, %s, %s, %s, %s, %s)",
        ([c.run_id for c in claims], [c.step_slug for c in claims],
         [c.task_index for c in claims], [c.attempt for c in claims], seconds,
         [c.worker for c in claims]),
    ).fetchone()
    assert row is not None
    extended: int = row[0]
    return extended


def test_extend_current_claims_only(conn: psycopg.Connection) -> None:
    define(conn, "ext", {"each": []}, maps=("each",), timeout=10)
    start(conn, "ext", [1, 2])
    c0, c1 = claim(conn, "ext")
    vt1 = vt_of(conn, "ext", c1.msg_id)
    with conn.transaction():
        assert extend(conn, [c0, replace(c1, attempt=2)], 600) == 1
        assert visible_in(conn, "ext", c0.msg_id) == pytest.approx(600, abs=0.001)
    assert vt_of(conn, "ext", c1.msg_id) == vt1
    with conn.transaction():
        assert extend(conn, [c0], 1) == 1
        assert visible_in(conn, "ext", c0.msg_id) > 500, "extending never shortens a claim"
    assert extend(conn, [], 600) == 0
    assert_invariants(conn, "ext")


def test_only_the_holding_worker_extends_and_within_bounds(conn: psycopg.Connection) -> None:
    """A second worker login guessing the attempt cannot push a claim it does
    not hold (to the year 2094, say); nor can anyone pass absurd spans."""
    define(conn, "ext", {"only": []}, timeout=10)
    start(conn, "ext")
    (c,) = claim(conn, "ext")
    before = vt_of(conn, "ext", c.msg_id)
    assert extend(conn, [replace(c, worker=uuid.uuid4())], 3600) == 0
    assert vt_of(conn, "ext", c.msg_id) == before
    for seconds in (0, -5, 608401, 2_000_000_000):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="seconds must be between"):
            extend(conn, [c], seconds)
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="needs the worker_id"):
        conn.execute("SELECT flowworker.extend_claims('ext', %s, %s, %s, %s, 60, NULL)",
                     ([c.run_id], [c.step_slug], [c.task_index], [c.attempt]))
    assert vt_of(conn, "ext", c.msg_id) == before


def test_a_reclaim_in_flight_makes_the_expired_claim_stale(conn: psycopg.Connection,
                                                          db_url: str) -> None:
    """A worker renewing a claim that expired, while another worker's
    start_tasks is taking it over, must learn that it lost it (and must not
    push the new holder's visibility timeout): otherwise both run the task."""
    define(conn, "ext", {"only": []}, timeout=10)
    start(conn, "ext")
    (old,) = claim(conn, "ext")
    expire(conn, "ext", [old.msg_id])
    renewed: list[int] = []
    with psycopg.connect(db_url) as rival, psycopg.connect(db_url, autocommit=True) as renewer:
        (new,) = claim(rival, "ext", worker=uuid.uuid4())  # its transaction stays open
        assert new.attempt == old.attempt + 1
        thread = threading.Thread(target=lambda: renewed.append(extend(renewer, [old], 600)))
        thread.start()
        wait_until(lambda: blocked_or_done(conn, renewer.info.backend_pid, thread), timeout=10,
                   interval=0.01, message="the renewal waits for the re-claim")
        rival.commit()
        thread.join(timeout=10)
    assert renewed == [0], "the renewal reported a claim another worker had taken"
    assert visible_in(conn, "ext", old.msg_id) < 16, "the new holder's claim was pushed out"
    assert_invariants(conn, "ext")
