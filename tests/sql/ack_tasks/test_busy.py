"""ack_tasks skips a run another transaction holds: its outcomes answer
'busy' and change nothing, the other runs' outcomes apply at once, and the
same outcomes apply once the holder is done."""

from __future__ import annotations

import psycopg
import pytest

from tests.sql.helpers import (
    ack,
    assert_invariants,
    claim,
    define,
    release,
    run_row,
    start,
    tasks,
)


def test_outcomes_of_a_held_run_are_busy_and_the_rest_apply(conn: psycopg.Connection,
                                                              db_url: str) -> None:
    define(conn, "busy", {"a": []})
    held, free = start(conn, "busy"), start(conn, "busy")
    claims = sorted(claim(conn, "busy"), key=lambda c: c.run_id != held)
    with psycopg.connect(db_url) as app:
        app.execute("SELECT flowworker.cancel_run(%s)", (held,))  # not committed yet
        assert ack(conn, claims, ["x", "y"]) == ["busy", "completed"]
        assert ack(conn, claims[:1], [None], ["boom"]) == ["busy"]
        assert [t["status"] for t in tasks(conn, held)] == ["started"]
        assert run_row(conn, free)["status"] == "completed"
        app.rollback()
    assert ack(conn, claims, ["x", "y"]) == ["completed", "completed"]
    assert run_row(conn, held)["output"] == {"a": "x"}
    assert_invariants(conn, "busy")


def test_an_outcome_already_applied_is_completed_even_while_its_run_is_held(
        conn: psycopg.Connection, db_url: str) -> None:
    """A retried ack whose first try committed (its reply lost) is told so,
    not 'busy', whoever holds the run now."""
    define(conn, "busy", {"a": [], "b": ["a"]})
    run_id = start(conn, "busy")
    (c,) = claim(conn, "busy")
    assert ack(conn, [c], ["x"]) == ["completed"]
    with psycopg.connect(db_url) as app:
        app.execute("SELECT 1 FROM flowworker.runs WHERE run_id = %s FOR UPDATE", (run_id,))
        assert ack(conn, [c], ["x"]) == ["completed"]
        app.rollback()


def test_a_release_skips_a_held_run_and_hands_back_the_rest(conn: psycopg.Connection,
                                                           db_url: str) -> None:
    define(conn, "busy", {"a": []})
    held, free = start(conn, "busy"), start(conn, "busy")
    claims = claim(conn, "busy")
    with psycopg.connect(db_url) as app:
        app.execute("SELECT 1 FROM flowworker.runs WHERE run_id = %s FOR UPDATE", (held,))
        assert release(conn, claims) == 1
        app.rollback()
    statuses = {t["run_id"]: t["status"] for r in (held, free) for t in tasks(conn, r)}
    assert statuses == {held: "started", free: "queued"}


def test_ack_tasks_needs_a_worker_for_every_outcome(conn: psycopg.Connection) -> None:
    define(conn, "busy", {"a": []})
    start(conn, "busy")
    (c,) = claim(conn, "busy")
    for workers in (None, [None], []):
        with pytest.raises(psycopg.errors.NullValueNotAllowed, match="needs the worker_id"):
            conn.execute("SELECT * FROM flowworker.ack_tasks(%s, %s, %s, %s, ARRAY['1'::jsonb],"
                         " ARRAY[NULL::text], %s)",
                         ([c.run_id], [c.step_slug], [c.task_index], [c.attempt], workers))
