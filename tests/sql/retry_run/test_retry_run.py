"""retry_run: a failed or cancelled run goes on from where it stopped;
completed steps keep their outputs and never run again; of a map, only
the elements that did not complete run again; a late answer from the old
attempt is refused."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.sql.helpers import (
    ack,
    assert_invariants,
    claim,
    complete,
    define,
    fail,
    run_row,
    start,
    step_statuses,
    tasks,
    visible_in,
)


def retry(conn: psycopg.Connection, run_id: uuid.UUID) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM flowworker.retry_run(%s)", (run_id,)).fetchone()
    assert row is not None
    return row


def test_a_failed_run_retries_its_failed_step_and_keeps_completed_ones(
        conn: psycopg.Connection) -> None:
    define(conn, "r", {"a": [], "b": ["a"], "c": ["b"]}, max_attempts=1)
    run_id = start(conn, "r")
    (a,) = claim(conn, "r")
    assert complete(conn, a, {"a": 1})
    (b,) = claim(conn, "r")
    assert fail(conn, b, "boom") == "failed"
    assert step_statuses(conn, run_id) == {"a": "completed", "b": "failed", "c": "cancelled"}

    run = retry(conn, run_id)
    assert (run["status"], run["error_message"], run["failed_at"]) == ("started", None, None)
    assert step_statuses(conn, run_id) == {"a": "completed", "b": "started", "c": "created"}
    (b2,) = claim(conn, "r")
    # max_attempts (1) more, numbered on from the failed one
    assert (b2.step_slug, b2.attempt, b2.input) == ("b", 2, {"a": {"a": 1}})
    assert complete(conn, b2, "fixed")
    (c,) = claim(conn, "r")
    assert complete(conn, c, "end")
    assert run_row(conn, run_id)["status"] == "completed"
    a_task = next(t for t in tasks(conn, run_id) if t["step_slug"] == "a")
    assert a_task["attempts_count"] == 1, "a completed step ran again"
    kinds = [e[0] for e in conn.execute(
        "SELECT event FROM flowworker.events WHERE run_id = %s ORDER BY event_id", (run_id,))]
    assert kinds == ["run.started", "task.failed", "run.failed", "run.retried", "run.completed"]
    assert_invariants(conn, "r")


def test_of_a_map_only_the_elements_that_did_not_complete_run_again(
        conn: psycopg.Connection) -> None:
    define(conn, "m", {"each": [], "after": ["each"]}, maps=("each",), max_attempts=1)
    run_id = start(conn, "m", [0, 1, 2, 3])
    claims = claim(conn, "m")
    assert ack(conn, claims, [0, None, 20, None], [None, "x", None, "y"])[0] == "completed"
    assert run_row(conn, run_id)["status"] == "failed"

    retry(conn, run_id)
    again = claim(conn, "m")
    assert sorted(c.task_index for c in again) == [1, 3]
    assert all(c.attempt == 2 for c in again)
    assert ack(conn, again, [10, 30]) == ["completed", "completed"]
    (after,) = claim(conn, "m")
    assert after.input == {"each": [0, 10, 20, 30]}
    assert_invariants(conn, "m")


def test_a_cancelled_run_retries_what_was_cancelled(conn: psycopg.Connection) -> None:
    define(conn, "r", {"a": [], "b": ["a"]})
    run_id = start(conn, "r")
    (a,) = claim(conn, "r")
    conn.execute("SELECT flowworker.cancel_run(%s, 'oops')", (run_id,))
    run = retry(conn, run_id)
    assert (run["status"], run["cancel_reason"], run["cancelled_at"]) == ("started", None, None)
    (a2,) = claim(conn, "r", worker=uuid.UUID(int=9))  # another worker takes it up
    assert (a2.step_slug, a2.attempt) == ("a", 2)
    # The old claim's late answer is refused: its task was claimed anew.
    assert not complete(conn, a, "late")
    assert complete(conn, a2, "fresh")
    assert tasks(conn, run_id)[0]["output"] == "fresh"
    assert_invariants(conn, "r")


def test_retrying_a_run_that_is_not_over_is_an_error_naming_its_status(
        conn: psycopg.Connection) -> None:
    define(conn, "r", {"a": []})
    run_id = start(conn, "r")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState,
                       match=f"run {run_id} is started: only a run that is failed or "
                             "cancelled can be retried"):
        retry(conn, run_id)
    (a,) = claim(conn, "r")
    assert complete(conn, a, 1)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="is completed"):
        retry(conn, run_id)


@pytest.mark.parametrize("same_worker", [False, True], ids=["another worker", "same worker"])
def test_a_zombie_answering_after_a_retry_is_refused(conn: psycopg.Connection,
                                                     same_worker: bool) -> None:
    """The old claim's worker may claim the task again itself (one worker
    process, cancel and retry within its check for ended runs): the attempt
    number alone must tell the two claims apart."""
    define(conn, "r", {"a": []}, max_attempts=1)
    run_id = start(conn, "r")
    (zombie,) = claim(conn, "r")
    conn.execute("SELECT flowworker.cancel_run(%s)", (run_id,))
    retry(conn, run_id)
    (fresh,) = claim(conn, "r", worker=zombie.worker if same_worker else uuid.UUID(int=7))
    assert (zombie.attempt, fresh.attempt) == (1, 2)
    assert not complete(conn, zombie, "zombie"), "the old holder answered the new claim"
    assert ack(conn, [zombie], [None], ["zombie error"]) == ["stale"]
    assert complete(conn, fresh, "fresh")
    assert run_row(conn, run_id)["output"] == {"a": "fresh"}


def test_a_retried_task_gets_max_attempts_more_numbered_on(conn: psycopg.Connection) -> None:
    define(conn, "n", {"a": []}, max_attempts=2, base_delay=60)
    run_id = start(conn, "n")
    (first,) = claim(conn, "n")
    assert fail(conn, first, "one") == "retry"
    conn.execute("UPDATE flowworker.q_n SET vt = now()")  # its backoff, passed
    (second,) = claim(conn, "n")
    assert fail(conn, second, "two") == "failed"
    retry(conn, run_id)
    (third,) = claim(conn, "n")
    assert third.attempt == 3
    assert fail(conn, third, "three") == "retry"
    [task] = tasks(conn, run_id)
    assert task["error_message"] == "attempt 3 of 4: three"
    assert 55 < visible_in(conn, "n", task["message_id"]) <= 60, "the first backoff again"
    conn.execute("UPDATE flowworker.q_n SET vt = now()")
    (fourth,) = claim(conn, "n")
    assert fail(conn, fourth, "four") == "failed"
    assert run_row(conn, run_id)["error_message"] == "step a failed: attempt 4 of 4: four"
    assert_invariants(conn, "n")
