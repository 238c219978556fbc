"""Retries: attempts counted at claim, backoff base_delay * 2^(n-1) capped at 3600 s."""

from __future__ import annotations

import psycopg
import pytest

from tests.sql.helpers import (
    Claim,
    assert_invariants,
    claim,
    define,
    expire,
    fail,
    start,
    tasks,
    visible_in,
)

TOLERANCE = 0.001  # the delay is computed from the same transaction's now()


def fail_and_measure(conn: psycopg.Connection, flow: str, c: Claim) -> float:
    """fail_task, then read vt - now() in the same transaction."""
    with conn.transaction():
        assert fail(conn, c, f"attempt {c.attempt} broke") == "retry"
        return visible_in(conn, flow, c.msg_id)


def test_backoff_doubles_per_attempt(conn: psycopg.Connection) -> None:
    define(conn, "r", {"a": []}, max_attempts=4, base_delay=7)
    run_id = start(conn, "r")
    delays = []
    for n in (1, 2, 3):
        (c,) = claim(conn, "r")
        assert c.attempt == n
        assert tasks(conn, run_id)[0]["attempts_count"] == n
        delays.append(fail_and_measure(conn, "r", c))
        task = tasks(conn, run_id)[0]
        assert (task["status"], task["error_message"]) == (
            "queued", f"attempt {n} of 4: attempt {n} broke")
        assert claim(conn, "r") == [], "a retry must not be visible before its delay"
        expire(conn, "r", [c.msg_id])
    assert delays == pytest.approx([7, 14, 28], abs=TOLERANCE)
    (last,) = claim(conn, "r")
    assert last.attempt == 4
    assert_invariants(conn, "r")



def test_step_base_delay_overrides_flow(conn: psycopg.Connection) -> None:
    define(conn, "s", {"a": []}, base_delay=100)
    conn.execute("SELECT flowworker.add_step('s', 'a', base_delay => 3)")
    start(conn, "s")
    (c,) = claim(conn, "s")
    assert fail_and_measure(conn, "s", c) == pytest.approx(3, abs=TOLERANCE)
    assert_invariants(conn, "s")



def test_backoff_is_capped_at_an_hour(conn: psycopg.Connection) -> None:
    define(conn, "cap", {"a": []}, max_attempts=5, base_delay=1000)
    start(conn, "cap")
    delays = []
    for _ in range(3):
        (c,) = claim(conn, "cap")
        delays.append(fail_and_measure(conn, "cap", c))
        expire(conn, "cap", [c.msg_id])
    assert delays == pytest.approx([1000, 2000, 3600], abs=TOLERANCE)
    assert_invariants(conn, "cap")



def test_zero_base_delay_retries_at_once(conn: psycopg.Connection) -> None:
    define(conn, "z", {"a": []}, base_delay=0)
    start(conn, "z")
    (c,) = claim(conn, "z")
    assert fail_and_measure(conn, "z", c) == pytest.approx(0, abs=TOLERANCE)
    (again,) = claim(conn, "z")
    assert again.attempt == 2
    assert_invariants(conn, "z")



def test_retry_delay_formula(conn: psycopg.Connection) -> None:
    cases = [(1, 1, 1), (1, 2, 2), (1, 3, 4), (5, 4, 40), (1, 12, 2048), (1, 13, 3600),
             (3600, 1, 3600), (0, 9, 0), (2, 1000, 3600)]
    got = [conn.execute("SELECT flowworker.retry_delay(%s, %s)", (b, n)).fetchone()
           for b, n, _ in cases]
    assert got == [(expected,) for _, _, expected in cases]
