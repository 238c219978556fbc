"""A claim whose visibility timeout passed is re-claimed with the next attempt."""

from __future__ import annotations

import psycopg

from tests.sql.helpers import (
    archived_ids,
    assert_invariants,
    claim,
    complete,
    define,
    expire,
    queued_ids,
    run_row,
    start,
    step_statuses,
    tasks,
    visible_in,
)


def test_claim_hides_message_for_timeout_plus_grace(conn: psycopg.Connection) -> None:
    define(conn, "vt", {"a": []}, timeout=30)
    conn.execute("SELECT flowworker.add_step('vt', 'a', timeout => 12)")
    start(conn, "vt")
    with conn.transaction():
        (c,) = claim(conn, "vt")
        assert c.timeout == 12
        assert visible_in(conn, "vt", c.msg_id) == 12 + 5  # helpers claim with grace 5
    assert_invariants(conn, "vt")



def test_expired_claim_is_reclaimed_and_old_claim_rejected(conn: psycopg.Connection) -> None:
    define(conn, "ec", {"a": []}, max_attempts=3)
    run_id = start(conn, "ec", {"x": 1})
    (first,) = claim(conn, "ec")
    assert claim(conn, "ec") == [], "a live claim is hidden"
    expire(conn, "ec", [first.msg_id])
    (second,) = claim(conn, "ec")
    assert (second.msg_id, second.attempt, second.input) == (first.msg_id, 2, {"x": 1})
    task = tasks(conn, run_id)[0]
    assert (task["status"], task["attempts_count"]) == ("started", 2)
    assert "lost" in task["error_message"]
    assert not complete(conn, first, "zombie")
    assert complete(conn, second, "ok")
    assert run_row(conn, run_id)["output"] == {"a": "ok"}
    assert_invariants(conn, "ec")



def test_max_expired_claims_fail_the_run(conn: psycopg.Connection) -> None:
    define(conn, "lost", {"a": [], "b": ["a"]}, max_attempts=3)
    run_id = start(conn, "lost")
    for attempt in (1, 2, 3):
        (c,) = claim(conn, "lost")
        assert c.attempt == attempt
        expire(conn, "lost", [c.msg_id])
    assert claim(conn, "lost") == []

    run = run_row(conn, run_id)
    assert run["status"] == "failed"
    assert "lost" in run["error_message"]
    (task,) = tasks(conn, run_id)
    assert (task["status"], task["attempts_count"]) == ("failed", 3)
    assert "lost" in task["error_message"]
    assert step_statuses(conn, run_id) == {"a": "failed", "b": "cancelled"}
    assert queued_ids(conn, "lost") == set()
    assert archived_ids(conn, "lost") == {c.msg_id}
    assert not complete(conn, c, "too late")
    assert_invariants(conn, "lost")



def test_lost_task_does_not_resurrect_cancelled_siblings(conn: psycopg.Connection) -> None:
    # Task 0 is lost on its last attempt; task 1 is still queued. One claim
    # sees both: the run fails, and task 1 must stay cancelled, not be handed out.
    define(conn, "sib", {"each": []}, maps=("each",), max_attempts=2)
    run_id = start(conn, "sib", ["x", "y"])
    for attempt in (1, 2):
        (c,) = claim(conn, "sib", batch_size=1)
        assert (c.task_index, c.attempt) == (0, attempt)
        expire(conn, "sib", [c.msg_id])

    assert claim(conn, "sib") == []

    assert run_row(conn, run_id)["status"] == "failed"
    assert [(t["task_index"], t["status"]) for t in tasks(conn, run_id)] == [
        (0, "failed"), (1, "cancelled")]
    assert queued_ids(conn, "sib") == set()
    assert_invariants(conn, "sib")



def test_two_lost_tasks_of_one_run_fail_it_once(conn: psycopg.Connection) -> None:
    define(conn, "two", {"each": []}, maps=("each",), max_attempts=1)
    run_id = start(conn, "two", ["x", "y"])
    claims = claim(conn, "two")
    expire(conn, "two", [c.msg_id for c in claims])

    assert claim(conn, "two") == []

    run = run_row(conn, run_id)
    assert (run["status"], run["error_message"]) == (
        "failed", "step each failed: claim expired on attempt 1 of 1: the worker running it "
                  "was lost")
    assert [(t["task_index"], t["status"]) for t in tasks(conn, run_id)] == [
        (0, "failed"), (1, "cancelled")]
    assert queued_ids(conn, "two") == set()
    assert_invariants(conn, "two")
