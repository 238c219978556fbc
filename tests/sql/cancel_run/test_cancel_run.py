"""cancel_run stops a run: tasks cancelled, messages archived, late work rejected."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.sql.helpers import (
    archived_ids,
    assert_invariants,
    claim,
    complete,
    define,
    expire,
    fail,
    queued_ids,
    run_row,
    start,
    step_statuses,
    tasks,
)


def cancel(conn: psycopg.Connection, run_id: uuid.UUID) -> dict[str, object]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM flowworker.cancel_run(%s)", (run_id,)).fetchone()
    assert row is not None
    return row


def test_cancel_started_run(conn: psycopg.Connection) -> None:
    define(conn, "cx", {"each": [], "after": ["each"]}, maps=("each",))
    run_id = start(conn, "cx", [1, 2, 3])
    keep = start(conn, "cx", [9])
    claimed = [c for c in claim(conn, "cx", batch_size=2) if c.run_id == run_id]
    assert len(claimed) == 2
    assert complete(conn, claimed[0], "done")
    msg_ids = {t["message_id"] for t in tasks(conn, run_id)}

    returned = cancel(conn, run_id)

    assert (returned["run_id"], returned["status"]) == (run_id, "cancelled")
    assert returned["cancelled_at"] is not None
    assert step_statuses(conn, run_id) == {"each": "cancelled", "after": "cancelled"}
    assert sorted(t["status"] for t in tasks(conn, run_id)) == [
        "cancelled", "cancelled", "completed"]
    assert queued_ids(conn, "cx").isdisjoint(msg_ids)
    assert msg_ids - {claimed[0].msg_id} <= archived_ids(conn, "cx")

    before = tasks(conn, run_id), run_row(conn, run_id)
    assert not complete(conn, claimed[1], "late")
    assert fail(conn, claimed[1], "late") == "stale"
    assert (tasks(conn, run_id), run_row(conn, run_id)) == before
    expire(conn, "cx", list(msg_ids))
    assert [c.run_id for c in claim(conn, "cx")] == [keep]
    assert_invariants(conn, "cx")



def test_cancel_finished_run_is_a_noop(conn: psycopg.Connection) -> None:
    define(conn, "cf", {"a": []}, max_attempts=1)
    done, failed = start(conn, "cf"), start(conn, "cf")
    claims = {c.run_id: c for c in claim(conn, "cf")}
    assert complete(conn, claims[done], "ok")
    assert fail(conn, claims[failed], "bad") == "failed"
    for run_id, status in ((done, "completed"), (failed, "failed")):
        before = run_row(conn, run_id)
        assert cancel(conn, run_id) == before
        assert before["status"] == status
        assert run_row(conn, run_id) == before
    assert cancel(conn, done) == run_row(conn, done)
    assert_invariants(conn, "cf")



def test_cancel_twice_returns_the_cancelled_run(conn: psycopg.Connection) -> None:
    define(conn, "cc", {"a": []})
    run_id = start(conn, "cc")
    first = cancel(conn, run_id)
    assert cancel(conn, run_id) == first
    assert_invariants(conn, "cc")



def test_cancel_unknown_run_raises(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.NoDataFound, match="does not exist"):
        cancel(conn, uuid.uuid4())
