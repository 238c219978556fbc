"""fail_task stores a huge error text cut short, once, whoever calls it."""

from __future__ import annotations

import psycopg

from flowworker.daemon.executor import MAX_ERROR_CHARS as CUT
from flowworker.daemon.executor import _describe
from tests.sql.helpers import claim, define, fail, start, tasks


def test_a_huge_error_is_cut_with_a_note_of_how_much(conn: psycopg.Connection) -> None:
    define(conn, "big_error", {"only": []}, max_attempts=2, base_delay=60)
    run_id = start(conn, "big_error", {})
    (c,) = claim(conn, "big_error")
    assert fail(conn, c, "E" * 100_000) == "retry"
    [task] = tasks(conn, run_id)
    assert task["error_message"] == ("attempt 1 of 2: " + "E" * CUT
                                     + f"... [{100_000 - CUT} more characters cut]")


def test_an_error_the_worker_already_cut_is_kept_as_it_is(conn: psycopg.Connection) -> None:
    define(conn, "cut_error", {"only": []}, max_attempts=1)
    run_id = start(conn, "cut_error", {})
    (c,) = claim(conn, "cut_error")
    text = _describe(ValueError("x" * 100_000))  # what a worker sends
    assert len(text) > CUT
    assert fail(conn, c, text) == "failed"
    [task] = tasks(conn, run_id)
    assert task["error_message"] == "attempt 1 of 1: " + text
    run = conn.execute("SELECT error_message FROM flowworker.runs WHERE run_id = %s",
                       (run_id,)).fetchone()
    assert run is not None
    assert run[0] == "step only failed: attempt 1 of 1: " + text
