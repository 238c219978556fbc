"""fail_task and ack_tasks as the worker calls them for handler control:
a retry after a given delay, a final failure with attempts left, errors
that say which attempt and which step, a completed task without the error
of an earlier attempt, and the runs that ended in an ack."""

from __future__ import annotations

import psycopg
import pytest

from tests.sql.helpers import (
    Claim,
    assert_invariants,
    claim,
    complete,
    define,
    expire,
    run_row,
    start,
    tasks,
    visible_in,
)


def fail_with(conn: psycopg.Connection, c: Claim, error: str, *, retry_after: int | None = None,
              final: bool = False) -> str:
    row = conn.execute("SELECT flowworker.fail_task(%s, %s, %s, %s, %s, %s, %s, %s)",
                       (c.run_id, c.step_slug, c.task_index, c.attempt, error, c.worker,
                        retry_after, final)).fetchone()
    assert row is not None
    result: str = row[0]
    return result


def ack_rows(conn: psycopg.Connection, claims: list[Claim], outputs: list[object],
             errors: list[str | None], retry_afters: list[int | None],
             finals: list[bool]) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT result, run_status, run_seconds, run_failed_step FROM flowworker.ack_tasks("
        "%s, %s, %s, %s, %s::jsonb[], %s, %s, %s, %s, true) ORDER BY ord",
        ([c.run_id for c in claims], [c.step_slug for c in claims],
         [c.task_index for c in claims], [c.attempt for c in claims],
         [None if o is None else psycopg.types.json.Jsonb(o) for o in outputs], errors,
         [c.worker for c in claims], retry_afters, finals)).fetchall()


def test_retry_after_replaces_the_backoff(conn: psycopg.Connection) -> None:
    define(conn, "ra", {"a": []}, max_attempts=3, base_delay=1)
    run_id = start(conn, "ra")
    (c,) = claim(conn, "ra")
    with conn.transaction():
        assert fail_with(conn, c, "RetryAfter: 429", retry_after=120) == "retry"
        assert visible_in(conn, "ra", c.msg_id) == pytest.approx(120, abs=0.01)
    [task] = tasks(conn, run_id)
    assert (task["status"], task["error_message"]) == ("queued", "attempt 1 of 3: RetryAfter: 429")
    for bad in (-1, 86401):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="retry_after must be"):
            fail_with(conn, c, "x", retry_after=bad)


def test_a_final_failure_fails_the_task_and_run_with_attempts_left(
        conn: psycopg.Connection) -> None:
    define(conn, "fin", {"charge": [], "ship": ["charge"]}, max_attempts=5)
    run_id = start(conn, "fin")
    (c,) = claim(conn, "fin")
    assert fail_with(conn, c, "Fail: card declined", final=True) == "failed"
    run = run_row(conn, run_id)
    assert (run["status"], run["error_message"]) == (
        "failed", "step charge failed: attempt 1 of 5: Fail: card declined")
    assert [(t["status"], t["attempts_count"]) for t in tasks(conn, run_id)] == [("failed", 1)]
    assert claim(conn, "fin") == []
    assert_invariants(conn, "fin")


def test_a_completed_task_drops_the_error_of_an_earlier_attempt(
        conn: psycopg.Connection) -> None:
    define(conn, "heal", {"a": []}, base_delay=0)
    run_id = start(conn, "heal")
    (c,) = claim(conn, "heal")
    assert fail_with(conn, c, "flaky") == "retry"
    expire(conn, "heal", [c.msg_id])
    (c2,) = claim(conn, "heal")
    assert complete(conn, c2, "ok")
    [task] = tasks(conn, run_id)
    assert (task["status"], task["error_message"], task["attempts_count"]) == (
        "completed", None, 2)


def test_ack_says_which_runs_ended_in_it(conn: psycopg.Connection) -> None:
    define(conn, "ends", {"a": []}, max_attempts=2)
    done, failed, going = start(conn, "ends"), start(conn, "ends"), start(conn, "ends")
    claims = {c.run_id: c for c in claim(conn, "ends")}
    rows = ack_rows(conn, [claims[done], claims[failed], claims[going]],
                    [1, None, None], [None, "Fail: no", "flaky"], [None, None, None],
                    [False, True, False])
    (ok, ok_status, ok_seconds, ok_step), (bad, bad_status, _, bad_step), going_row = rows
    assert (ok, ok_status, ok_step) == ("completed", "completed", None)
    assert isinstance(ok_seconds, float)
    assert ok_seconds >= 0
    assert (bad, bad_status, bad_step) == ("failed", "failed", "a")
    assert going_row == ("retry", None, None, None)
    assert_invariants(conn, "ends")


def test_old_callers_of_ack_tasks_and_fail_task_still_work(conn: psycopg.Connection) -> None:
    """Workers of version 2 call them with the arguments they knew."""
    define(conn, "old", {"a": []}, max_attempts=2)
    start(conn, "old")
    (c,) = claim(conn, "old")
    row = conn.execute("SELECT result FROM flowworker.ack_tasks(%s, %s, %s, %s, ARRAY[NULL::jsonb],"
                       " ARRAY['boom'], %s)",
                       ([c.run_id], [c.step_slug], [c.task_index], [c.attempt],
                        [c.worker])).fetchone()
    assert row == ("retry",)
