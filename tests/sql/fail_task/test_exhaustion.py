"""Exhausted attempts fail the task, its step and its run, and stop the rest."""

from __future__ import annotations

import psycopg

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


def test_exhaustion_fails_run_and_cancels_siblings(conn: psycopg.Connection) -> None:
    # root map of 4: task 0 fails twice, task 1 completes, task 2 stays
    # claimed, task 3 is never claimed.
    define(conn, "ex", {"each": [], "after": ["each"]}, maps=("each",),
           max_attempts=2, base_delay=60)
    run_id = start(conn, "ex", [0, 1, 2, 3])
    c0, c1, c2 = claim(conn, "ex", batch_size=3)
    assert complete(conn, c1, "one")
    assert fail(conn, c0, "first") == "retry"
    expire(conn, "ex", [c0.msg_id])
    (c0,) = claim(conn, "ex", batch_size=1)
    assert c0.attempt == 2
    msg_ids = {t["task_index"]: t["message_id"] for t in tasks(conn, run_id)}

    assert fail(conn, c0, "second and last") == "failed"

    run = run_row(conn, run_id)
    assert (run["status"], run["error_message"]) == (
        "failed", "step each failed: attempt 2 of 2: second and last")
    assert run["failed_at"] is not None
    assert step_statuses(conn, run_id) == {"each": "failed", "after": "cancelled"}
    by_index = {t["task_index"]: t for t in tasks(conn, run_id)}
    assert {i: t["status"] for i, t in by_index.items()} == {
        0: "failed", 1: "completed", 2: "cancelled", 3: "cancelled"}
    assert by_index[0]["error_message"] == "attempt 2 of 2: second and last"
    assert by_index[0]["attempts_count"] == 2
    assert queued_ids(conn, "ex") == set()
    assert {msg_ids[0], msg_ids[2], msg_ids[3]} <= archived_ids(conn, "ex")

    before = tasks(conn, run_id), run_row(conn, run_id)
    assert not complete(conn, c2, "late")
    assert fail(conn, c2, "late") == "stale"
    assert (tasks(conn, run_id), run_row(conn, run_id)) == before
    expire(conn, "ex", list(msg_ids.values()))
    assert claim(conn, "ex") == []
    assert_invariants(conn, "ex")



def test_step_max_attempts_overrides_flow(conn: psycopg.Connection) -> None:
    define(conn, "one", {"a": []}, max_attempts=5)
    conn.execute("SELECT flowworker.add_step('one', 'a', max_attempts => 1)")
    run_id = start(conn, "one")
    (c,) = claim(conn, "one")
    assert fail(conn, c, "only chance") == "failed"
    assert run_row(conn, run_id)["status"] == "failed"
    assert_invariants(conn, "one")



def test_other_runs_are_untouched(conn: psycopg.Connection) -> None:
    define(conn, "iso", {"a": []}, max_attempts=1)
    doomed, fine = start(conn, "iso"), start(conn, "iso")
    claims = {c.run_id: c for c in claim(conn, "iso")}
    assert fail(conn, claims[doomed]) == "failed"
    assert complete(conn, claims[fine], "ok")
    assert run_row(conn, fine)["status"] == "completed"
    assert_invariants(conn, "iso")
