"""prune deletes what ended before the cutoff, in batches, with everything
below it, and never touches a run that has not ended."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from bench import seed
from flowworker.schema import queries
from tests.sql.helpers import (
    archived_ids,
    claim,
    complete,
    define,
    fail,
    queued_ids,
    start,
)

WEEK = timedelta(days=7)


def prune(conn: psycopg.Connection, older_than: timedelta = WEEK, batch_size: int = 1000) -> int:
    row = conn.execute("SELECT flowworker.prune(%s, %s)", (older_than, batch_size)).fetchone()
    assert row is not None
    return int(row[0])


def snapshot(conn: psycopg.Connection, run_ids: list[uuid.UUID]) -> dict[str, list[Any]]:
    """Every row of these runs and below them, messages included."""
    ids = (run_ids,)
    return {
        "runs": conn.execute("SELECT * FROM flowworker.runs WHERE run_id = ANY (%s) "
                             "ORDER BY run_id", ids).fetchall(),
        "steps": conn.execute("SELECT * FROM flowworker.step_states WHERE run_id = ANY (%s) "
                              "ORDER BY run_id, step_slug", ids).fetchall(),
        "tasks": conn.execute("SELECT * FROM flowworker.step_tasks WHERE run_id = ANY (%s) "
                              "ORDER BY run_id, step_slug, task_index", ids).fetchall(),
        "events": conn.execute("SELECT * FROM flowworker.events WHERE run_id = ANY (%s) "
                               "ORDER BY event_id", ids).fetchall(),
        "queued": conn.execute(
            "SELECT q.* FROM flowworker.q_aged q JOIN flowworker.step_tasks t "
            "ON t.flow_slug = 'aged' AND t.message_id = q.msg_id "
            "WHERE t.run_id = ANY (%s) ORDER BY q.msg_id", ids).fetchall(),
    }


def run_ids(conn: psycopg.Connection, where: str) -> list[uuid.UUID]:
    return [r[0] for r in conn.execute(
        f"SELECT run_id FROM flowworker.runs WHERE {where} ORDER BY run_id").fetchall()]


def counts(conn: psycopg.Connection) -> tuple[int, ...]:
    row = conn.execute("""
        SELECT (SELECT count(*) FROM flowworker.runs),
               (SELECT count(*) FROM flowworker.step_states),
               (SELECT count(*) FROM flowworker.step_tasks),
               (SELECT count(*) FROM flowworker.a_aged),
               (SELECT count(*) FROM flowworker.q_aged)""").fetchone()
    assert row is not None
    return tuple(row)


def test_batches_delete_what_ended_before_the_cutoff_and_all_below_it(
        conn: psycopg.Connection) -> None:
    seed.seed(conn, old_ended=2000, old_going=20, recent_ended=100)
    going = run_ids(conn, "status = 'started'")
    recent = run_ids(conn, "started_at > now() - interval '1 day'")
    kept_before = snapshot(conn, going + recent)

    assert [prune(conn, batch_size=500) for _ in range(5)] == [500, 500, 500, 500, 0]

    # What is left is exactly the runs that were going or ended recently,
    # row for row; nothing points at a run, step or task that is gone.
    assert run_ids(conn, "true") == sorted(going + recent)
    assert snapshot(conn, going + recent) == kept_before
    assert seed.orphans(conn) == 0
    # 2 steps and 3 tasks per run; split's 2 messages archived for the 6 of
    # the recent runs that failed or were cancelled; going runs keep 2 queued.
    assert counts(conn) == (120, 240, 360, 12, 40)
    # Their history: started and ended (94 completed, 1 cancelled), a failed
    # run's 3 failed attempts too (5 runs), a going run's start (20).
    assert conn.execute("SELECT count(*) FROM flowworker.events").fetchone() == (
        94 * 2 + 2 + 5 * 5 + 20,)


def test_a_run_that_has_not_ended_is_never_touched_however_old(
        conn: psycopg.Connection) -> None:
    """Not even one that carries an old end time from before it was
    started again (as a retried run does)."""
    seed.seed(conn, old_ended=0, old_going=30, recent_ended=0)
    going = run_ids(conn, "true")
    conn.execute("UPDATE flowworker.runs SET started_at = now() - interval '10 years', "
                 "failed_at = now() - interval '9 years', "
                 "cancelled_at = now() - interval '9 years'")
    before = snapshot(conn, going)
    assert prune(conn, older_than=timedelta(seconds=1)) == 0
    assert snapshot(conn, going) == before


def test_the_time_a_run_ended_is_its_latest_end(conn: psycopg.Connection) -> None:
    """Runs that failed long ago and, retried, completed or were cancelled
    just now, and a run that started long ago and ended just now, are kept."""
    seed.seed(conn, old_ended=0, old_going=0, recent_ended=3)
    cancelled, completed, _ = run_ids(conn, "true")
    long_ago = "now() - interval '29 days'"
    conn.execute(f"UPDATE flowworker.runs SET status = 'cancelled', completed_at = NULL, "
                 f"failed_at = {long_ago}, cancelled_at = now() WHERE run_id = %s",
                 (cancelled,))
    conn.execute(f"UPDATE flowworker.runs SET failed_at = {long_ago} WHERE run_id = %s",
                 (completed,))
    conn.execute("UPDATE flowworker.runs SET started_at = now() - interval '30 days'")
    assert prune(conn) == 0
    conn.execute("UPDATE flowworker.runs SET completed_at = completed_at - interval '8 days', "
                 "cancelled_at = cancelled_at - interval '8 days'")
    assert prune(conn) == 3


def test_runs_worked_by_the_real_functions_leave_nothing_behind(
        conn: psycopg.Connection) -> None:
    """Completed, failed (retried first) and cancelled runs as the state
    machine leaves them, queue messages and archive included."""
    define(conn, "real", {"a": [], "b": ["a"]}, maps=("b",))
    done, failed, cancelled, going = (start(conn, "real", [1, 2]) for _ in range(4))
    for c in claim(conn, "real", batch_size=10):
        assert complete(conn, c, [1, 2])
    for c in claim(conn, "real", batch_size=10):
        if c.run_id == failed:
            assert fail(conn, c) == "retry"
        elif c.run_id == done:
            assert complete(conn, c, c.input)
    conn.execute("UPDATE flowworker.flows SET max_attempts = 2")
    conn.execute("UPDATE flowworker.q_real SET vt = now()")
    retried = next(c for c in claim(conn, "real", batch_size=10) if c.run_id == failed)
    assert fail(conn, retried) == "failed"
    conn.execute("SELECT flowworker.cancel_run(%s)", (cancelled,))
    assert archived_ids(conn, "real")
    assert queued_ids(conn, "real")
    conn.execute("UPDATE flowworker.runs SET started_at = started_at - interval '30 days', "
                 "completed_at = completed_at - interval '30 days', "
                 "failed_at = failed_at - interval '30 days', "
                 "cancelled_at = cancelled_at - interval '30 days'")

    history = "SELECT DISTINCT run_id FROM flowworker.events"
    assert {r[0] for r in conn.execute(history)} >= {failed, cancelled}
    assert prune(conn) == 3
    assert run_ids(conn, "true") == [going]
    assert {r[0] for r in conn.execute(history)} <= {going}, "their history went with them"
    going_msgs = {r[0] for r in conn.execute(
        "SELECT message_id FROM flowworker.step_tasks WHERE run_id = %s", (going,))}
    assert archived_ids(conn, "real") == set()
    assert queued_ids(conn, "real") <= going_msgs


def test_a_leftover_queued_message_of_an_ended_run_goes_too(conn: psycopg.Connection) -> None:
    seed.seed(conn, old_ended=1, old_going=0, recent_ended=0)
    conn.execute("INSERT INTO flowworker.q_aged (msg_id, message) VALUES (0, '{}')")
    assert prune(conn) == 1
    assert counts(conn) == (0, 0, 0, 0, 0)


def test_workers_stopped_or_silent_for_longer_go(conn: psycopg.Connection) -> None:
    rows = {"stopped_old": ("8 days", "8 days"), "stopped_new": ("8 days", "1 day"),
            "silent_old": ("8 days", None), "live": ("1 minute", None)}
    ids = {name: uuid.uuid4() for name in rows}
    for name, (beat, stopped) in rows.items():
        conn.execute(
            "INSERT INTO flowworker.workers (worker_id, flow_slug, hostname, pid, "
            "last_heartbeat_at, stopped_at) VALUES (%s, 'f', 'h', 1, now() - %s::interval, "
            "now() - %s::interval)", (ids[name], beat, stopped))
    assert prune(conn, batch_size=1) == 1
    assert prune(conn, batch_size=1) == 1
    assert prune(conn, batch_size=1) == 0
    left = {r[0] for r in conn.execute("SELECT worker_id FROM flowworker.workers")}
    assert left == {ids["stopped_new"], ids["live"]}


def test_a_run_another_transaction_holds_is_skipped_without_waiting(
        conn: psycopg.Connection, db_url: str) -> None:
    seed.seed(conn, old_ended=3, old_going=0, recent_ended=0)
    held = run_ids(conn, "true")[1]
    with psycopg.connect(db_url) as holder:
        holder.execute("SELECT 1 FROM flowworker.runs WHERE run_id = %s FOR UPDATE", (held,))
        conn.execute("SET lock_timeout = '5s'")  # a wait would end in an error, not a hang
        assert prune(conn) == 2
        assert run_ids(conn, "true") == [held]
        holder.rollback()
    assert prune(conn) == 1


def test_one_worker_prunes_at_a_time(conn: psycopg.Connection, db_url: str) -> None:
    """The worker's query skips the batch (NULL) while another batch runs."""
    seed.seed(conn, old_ended=2, old_going=0, recent_ended=0)
    batch = queries()["prune_batch"].replace("$1", "%s").replace("$2", "%s")
    with psycopg.connect(db_url) as other:
        other.execute("SELECT pg_advisory_xact_lock(hashtext('flowworker.prune'))")
        assert conn.execute(batch, (WEEK, 1000)).fetchone() == (None,)
    assert conn.execute(batch, (WEEK, 1000)).fetchone() == (2,)
    assert conn.execute(batch, (WEEK, 1000)).fetchone() == (0,)


@pytest.mark.parametrize(("older_than", "batch_size"), [
    ("0 s", 10), ("-1 day", 10), (None, 10), ("1 day", 0), ("1 day", 100_001),
    ("1 day", None), ("1 day", -5),
])
def test_bad_arguments_are_refused(conn: psycopg.Connection, older_than: str | None,
                                   batch_size: int | None) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue,
                       match=r"^prune: older_than must be more than 0"):
        conn.execute("SELECT flowworker.prune(%s::interval, %s::int)", (older_than, batch_size))
