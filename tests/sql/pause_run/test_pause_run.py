"""pause_run / resume_run and pause_flow / resume_flow: nothing of a paused
run or flow is claimed; running tasks finish and are recorded; resume goes
on exactly where it stopped, delayed retries keeping their remaining delay."""

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


def call(conn: psycopg.Connection, function: str, *args: Any) -> dict[str, Any]:
    placeholders = ", ".join(["%s"] * len(args))
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(f"SELECT * FROM flowworker.{function}({placeholders})", args).fetchone()
    assert row is not None
    return row


def events(conn: psycopg.Connection, run_id: uuid.UUID) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT event, step_slug, detail FROM flowworker.events "
                        "WHERE run_id = %s ORDER BY event_id", (run_id,)).fetchall()


def test_a_paused_run_is_not_claimed_and_resumes_where_it_stopped(
        conn: psycopg.Connection) -> None:
    define(conn, "p", {"a": [], "b": ["a"]})
    paused, other = start(conn, "p"), start(conn, "p")
    assert call(conn, "pause_run", paused)["status"] == "paused"
    (c,) = claim(conn, "p")
    assert c.run_id == other, "a paused run's task was claimed"
    assert claim(conn, "p") == []
    assert call(conn, "pause_run", paused)["status"] == "paused", "pausing again changes nothing"
    resumed = call(conn, "resume_run", paused)
    assert (resumed["status"], resumed["paused_at"]) == ("started", None)
    (c2,) = claim(conn, "p")
    assert c2.run_id == paused
    assert [e[0] for e in events(conn, paused)] == ["run.started", "run.paused", "run.resumed"]
    assert_invariants(conn, "p")


def test_running_tasks_finish_while_paused_and_their_dependents_wait(
        conn: psycopg.Connection) -> None:
    define(conn, "p", {"a": [], "b": ["a"]})
    run_id = start(conn, "p")
    (a,) = claim(conn, "p")
    call(conn, "pause_run", run_id)
    assert complete(conn, a, "done"), "a running task's outcome is recorded while paused"
    assert step_statuses(conn, run_id) == {"a": "completed", "b": "created"}
    assert claim(conn, "p") == []
    call(conn, "resume_run", run_id)
    (b,) = claim(conn, "p")
    assert (b.step_slug, b.input) == ("b", {"a": "done"})
    assert complete(conn, b, 1)
    assert run_row(conn, run_id)["status"] == "completed"
    assert_invariants(conn, "p")


def test_a_delayed_retry_keeps_its_remaining_delay(conn: psycopg.Connection) -> None:
    define(conn, "p", {"a": []}, base_delay=100)
    run_id = start(conn, "p")
    (a,) = claim(conn, "p")
    assert fail(conn, a, "flaky") == "retry"
    left = visible_in(conn, "p", a.msg_id)
    call(conn, "pause_run", run_id)
    assert tasks(conn, run_id)[0]["paused_delay"] is not None
    call(conn, "resume_run", run_id)
    assert visible_in(conn, "p", a.msg_id) == pytest.approx(left, abs=1.0)


def test_a_retry_during_the_pause_waits_for_resume(conn: psycopg.Connection) -> None:
    define(conn, "p", {"a": []}, base_delay=0)
    run_id = start(conn, "p")
    (a,) = claim(conn, "p")
    call(conn, "pause_run", run_id)
    assert ack(conn, [a], [None], ["flaky"]) == ["retry"]
    assert claim(conn, "p") == [], "the retry of a paused run's task was claimed"
    call(conn, "resume_run", run_id)
    (again,) = claim(conn, "p")
    assert again.attempt == 2


def test_an_expired_claim_of_a_paused_run_waits_too(conn: psycopg.Connection) -> None:
    define(conn, "p", {"a": []})
    run_id = start(conn, "p")
    (a,) = claim(conn, "p")
    call(conn, "pause_run", run_id)
    assert visible_in(conn, "p", a.msg_id) > 1e9, "a running task's claim is held too"
    # The worker died; what was left of its claim ran out during the pause.
    conn.execute("UPDATE flowworker.step_tasks SET paused_delay = '0' WHERE run_id = %s",
                 (run_id,))
    assert claim(conn, "p") == []
    call(conn, "resume_run", run_id)
    (again,) = claim(conn, "p")
    assert again.attempt == 2


def test_a_claim_extended_during_the_pause_keeps_its_extension(
        conn: psycopg.Connection) -> None:
    define(conn, "p", {"a": []})
    run_id = start(conn, "p")
    (a,) = claim(conn, "p")  # hidden for 5 s
    call(conn, "pause_run", run_id)
    extended = conn.execute(
        "SELECT flowworker.extend_claims('p', %s, %s, %s, %s, 600, %s)",
        ([a.run_id], [a.step_slug], [a.task_index], [a.attempt], [a.worker])).fetchone()
    assert extended == (1,)
    assert visible_in(conn, "p", a.msg_id) > 1e9, "the paused claim stays hidden"
    call(conn, "resume_run", run_id)
    assert visible_in(conn, "p", a.msg_id) == pytest.approx(600, abs=5.0), \
        "the extension was lost on resume: the running task can be claimed twice"


def test_pausing_or_resuming_a_finished_run_is_an_error_naming_its_status(
        conn: psycopg.Connection) -> None:
    define(conn, "p", {"a": []})
    run_id = start(conn, "p")
    (a,) = claim(conn, "p")
    assert complete(conn, a, 1)
    for function in ("pause_run", "resume_run"):
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState,
                           match=f"run {run_id} is completed"):
            call(conn, function, run_id)
    with pytest.raises(psycopg.errors.NoDataFound, match="does not exist"):
        call(conn, "pause_run", uuid.uuid4())


def test_a_paused_run_can_be_cancelled_with_a_reason(conn: psycopg.Connection) -> None:
    define(conn, "p", {"a": []})
    run_id = start(conn, "p")
    call(conn, "pause_run", run_id)
    run = call(conn, "cancel_run", run_id, "customer asked")
    assert (run["status"], run["cancel_reason"], run["paused_at"]) == (
        "cancelled", "customer asked", None)
    assert events(conn, run_id)[-1] == ("run.cancelled", None, {"reason": "customer asked"})
    assert claim(conn, "p") == []
    assert_invariants(conn, "p")


def test_a_paused_flow_is_not_claimed_and_runs_still_start(conn: psycopg.Connection) -> None:
    define(conn, "pf", {"a": []})
    assert call(conn, "pause_flow", "pf")["paused_at"] is not None
    run_id = start(conn, "pf")
    assert claim(conn, "pf") == []
    assert call(conn, "resume_flow", "pf")["paused_at"] is None
    (c,) = claim(conn, "pf")
    assert c.run_id == run_id
    with pytest.raises(psycopg.errors.NoDataFound, match="flow 'ghost' does not exist"):
        call(conn, "pause_flow", "ghost")
