"""NOTIFY: a data-free hint on flowworker_<flow>, at most once per queue per transaction."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.sql.helpers import claim, define, fail, start

SENTINEL = "flowworker_test_sentinel"


@pytest.fixture
def listener(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("LISTEN flowworker_nf")
        conn.execute("LISTEN flowworker_other")
        conn.execute(f"LISTEN {SENTINEL}")
        yield conn


def received(listener: psycopg.Connection, conn: psycopg.Connection) -> list[tuple[str, str]]:
    """Every notification committed before now: they arrive in commit order,
    so everything before our own sentinel has arrived once the sentinel has."""
    conn.execute(f"NOTIFY {SENTINEL}")
    got: list[tuple[str, str]] = []
    for n in listener.notifies(timeout=10):
        if n.channel == SENTINEL:
            return got
        got.append((n.channel, n.payload))
    raise AssertionError(f"sentinel not received; got {got}")


def test_fifty_runs_in_one_transaction_notify_once(
        conn: psycopg.Connection, listener: psycopg.Connection) -> None:
    define(conn, "nf", {"a": [], "b": []})
    define(conn, "other", {"a": []})
    assert received(listener, conn) == []
    with conn.transaction():
        for _ in range(50):
            start(conn, "nf")
        start(conn, "other")
    assert sorted(received(listener, conn)) == [("flowworker_nf", ""), ("flowworker_other", "")]
    for _ in range(3):
        start(conn, "nf")
    assert received(listener, conn) == [("flowworker_nf", "")] * 3


def test_delayed_work_does_not_notify_but_immediate_retry_does(
        conn: psycopg.Connection, listener: psycopg.Connection) -> None:
    define(conn, "nf", {"a": []}, base_delay=5)
    conn.execute("SELECT flowworker.add_step('nf', 'a', start_delay => 10)")
    start(conn, "nf")
    assert received(listener, conn) == []
    conn.execute("SELECT flowworker.add_step('nf', 'a', base_delay => 0)")
    conn.execute("UPDATE flowworker.q_nf SET vt = now()")
    (c,) = claim(conn, "nf")
    assert fail(conn, c) == "retry"
    assert received(listener, conn) == [("flowworker_nf", "")]
