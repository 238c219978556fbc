"""complete_task and fail_task apply only under the current claim."""

from __future__ import annotations

from dataclasses import replace

import psycopg

from tests.sql.helpers import (
    assert_invariants,
    claim,
    complete,
    define,
    expire,
    fail,
    queued_ids,
    run_row,
    start,
    tasks,
)


def snapshot(conn: psycopg.Connection) -> tuple[object, ...]:
    return (
        conn.execute("SELECT * FROM flowworker.runs ORDER BY run_id").fetchall(),
        conn.execute("SELECT * FROM flowworker.step_states ORDER BY run_id, step_slug")
        .fetchall(),
        conn.execute("SELECT * FROM flowworker.step_tasks ORDER BY run_id, step_slug, task_index")
        .fetchall(),
        conn.execute("SELECT * FROM flowworker.q_st ORDER BY msg_id").fetchall(),
    )


def test_wrong_attempt_and_wrong_task_change_nothing(conn: psycopg.Connection) -> None:
    define(conn, "st", {"a": [], "b": ["a"]})
    start(conn, "st")
    (c,) = claim(conn, "st")
    before = snapshot(conn)
    for stale in (replace(c, attempt=0), replace(c, attempt=2), replace(c, task_index=1),
                  replace(c, step_slug="b"), replace(c, step_slug="nope")):
        assert not complete(conn, stale, "x")
        assert fail(conn, stale, "x") == "stale"
    assert snapshot(conn) == before
    assert_invariants(conn, "st")



def test_superseded_claim_is_rejected(conn: psycopg.Connection) -> None:
    define(conn, "st", {"a": [], "b": ["a"]})
    run_id = start(conn, "st")
    (old,) = claim(conn, "st")
    expire(conn, "st", [old.msg_id])
    (new,) = claim(conn, "st")
    assert new.attempt == old.attempt + 1
    before = snapshot(conn)
    assert not complete(conn, old, "zombie")
    assert fail(conn, old, "zombie") == "stale"
    assert snapshot(conn) == before
    assert complete(conn, new, "fresh")
    assert tasks(conn, run_id)[0]["output"] == "fresh"
    assert_invariants(conn, "st")



def test_repeated_complete_is_harmless(conn: psycopg.Connection) -> None:
    define(conn, "st", {"a": [], "b": ["a"]})
    run_id = start(conn, "st")
    (c,) = claim(conn, "st")
    assert complete(conn, c, {"v": 1})
    before = snapshot(conn)
    assert not complete(conn, c, {"v": 1})
    assert not complete(conn, c, {"v": 2})
    assert fail(conn, c, "after the fact") == "stale"
    assert snapshot(conn) == before
    steps = [(t["step_slug"], t["task_index"]) for t in tasks(conn, run_id)]
    assert steps == [("a", 0), ("b", 0)], "b must be started exactly once"
    assert len(queued_ids(conn, "st")) == 1
    assert tasks(conn, run_id)[0]["output"] == {"v": 1}
    assert_invariants(conn, "st")



def test_repeated_complete_of_last_step_keeps_run_output(conn: psycopg.Connection) -> None:
    define(conn, "st", {"a": []})
    run_id = start(conn, "st")
    (c,) = claim(conn, "st")
    assert complete(conn, c, 1)
    assert not complete(conn, c, 2)
    assert run_row(conn, run_id)["output"] == {"a": 1}
    assert_invariants(conn, "st")



def test_failed_attempt_cannot_be_completed(conn: psycopg.Connection) -> None:
    define(conn, "st", {"a": []}, base_delay=60)
    run_id = start(conn, "st")
    (c,) = claim(conn, "st")
    assert fail(conn, c, "broke") == "retry"
    assert not complete(conn, c, "late")
    assert fail(conn, c, "again") == "stale"
    task = tasks(conn, run_id)[0]
    assert (task["status"], task["output"], task["error_message"]) == (
        "queued", None, "attempt 1 of 3: broke")
    assert_invariants(conn, "st")
