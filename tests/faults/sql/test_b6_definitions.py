"""RELIABILITY B6: absurd definitions. Each option is bounded at definition
time, with a message naming it, so no definition can make the flow's claims
fail later (a timeout of 2^31-1 used to pass the CHECK, then every
start_tasks of the flow failed with integer out of range)."""

from __future__ import annotations

import psycopg
import pytest

from tests.sql.helpers import claim, complete, define, run_row, start

BAD = [
    ("create_flow('f', timeout => 2147483647)", "flow 'f': timeout must be between 1 and 604800"),
    ("create_flow('f', timeout => 0)", "flow 'f': timeout must be between 1 and 604800"),
    ("create_flow('f', timeout => -1)", "flow 'f': timeout must be between 1 and 604800"),
    ("create_flow('f', max_attempts => 0)", "max_attempts must be between 1 and 1000"),
    ("create_flow('f', max_attempts => 2147483647)", "max_attempts must be between 1 and 1000"),
    ("create_flow('f', base_delay => -1)", "base_delay must be between 0 and 86400"),
    ("create_flow('f', base_delay => 2147483647)", "base_delay must be between 0 and 86400"),
    ("add_step('ok', 'a', timeout => 2147483647)",
     "step ok.a: timeout must be between 1 and 604800"),
    ("add_step('ok', 'a', start_delay => 2147483647)",
     "step ok.a: start_delay must be between 0 and 2592000"),
    ("add_step('ok', 'a', start_delay => -1)", "start_delay must be between 0 and 2592000"),
    ("add_step('ok', 'a', max_attempts => -5)", "max_attempts must be between 1 and 1000"),
    ("add_step('ok', 'a', base_delay => 86401)", "base_delay must be between 0 and 86400"),
]


@pytest.mark.parametrize(("call", "message"), BAD)
def test_an_absurd_option_is_refused_naming_it(conn: psycopg.Connection, call: str,
                                               message: str) -> None:
    conn.execute("SELECT flowworker.create_flow('ok')")
    before = conn.execute("SELECT (SELECT count(*) FROM flowworker.flows), "
                          "(SELECT count(*) FROM flowworker.steps)").fetchone()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute(f"SELECT flowworker.{call}")
    after = conn.execute("SELECT (SELECT count(*) FROM flowworker.flows), "
                         "(SELECT count(*) FROM flowworker.steps)").fetchone()
    assert after == before


def test_the_tables_hold_the_same_bounds(conn: psycopg.Connection) -> None:
    """Even the owner writing a table directly cannot store an absurd option."""
    define(conn, "ok", {"a": []})
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE flowworker.flows SET timeout = 2147483647")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE flowworker.steps SET start_delay = 2147483647")


def test_options_at_their_bounds_make_a_flow_that_works(conn: psycopg.Connection) -> None:
    conn.execute("SELECT flowworker.create_flow('edge', max_attempts => 1000, "
                 "base_delay => 86400, timeout => 604800)")
    conn.execute("SELECT flowworker.add_step('edge', 'a', max_attempts => 1, base_delay => 0, "
                 "timeout => 1, start_delay => 0)")
    conn.execute("SELECT flowworker.add_step('edge', 'late', start_delay => 2592000)")
    run_id = start(conn, "edge")
    (c,) = claim(conn, "edge")
    assert c.step_slug == "a"
    assert complete(conn, c, 1)
    late = conn.execute("SELECT extract(epoch FROM vt - now()) FROM flowworker.q_edge").fetchone()
    assert late is not None
    assert abs(float(late[0]) - 2592000) < 5
    assert run_row(conn, run_id)["status"] == "started"
