# ruff: noqa: F811 - fixtures are imported so that pytest finds them here
"""The fault proxy itself (tests/faults/proxy.py): pass-through, delay,
reset, blackhole and message rules, against the test's PostgreSQL. The D
rows rely on each of these doing exactly what it says."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.acceptance.harness import wait_until
from tests.faults.proxy import (  # noqa: F401 - fixture used by name
    Direction,
    Message,
    Proxy,
    ProxyConnection,
    Verdict,
    db_proxy,
)
from tests.support.database import PgServer


@pytest.fixture
def proxy(db_proxy: Proxy) -> Proxy:
    return db_proxy


def connect(proxy: Proxy, pg_server: PgServer, name: str) -> psycopg.Connection:
    return psycopg.connect(proxy.url(pg_server.admin_url), autocommit=True, connect_timeout=5,
                           application_name=name)


def test_passes_traffic_through_and_reads_the_startup_packet(
        proxy: Proxy, pg_server: PgServer) -> None:
    with connect(proxy, pg_server, "through") as conn:
        assert conn.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)
        assert conn.info.port == proxy.port
    [seen] = proxy.connections()
    assert seen.application_name == "through"
    assert seen.bytes_up > 0
    assert seen.bytes_down > 0


def test_delay_applies_to_each_direction(proxy: Proxy, pg_server: PgServer) -> None:
    with connect(proxy, pg_server, "slow") as conn:
        conn.execute("SELECT 1")
        proxy.set_delay(0.3)
        began = time.monotonic()
        conn.execute("SELECT 1")
        took = time.monotonic() - began
        proxy.set_delay(0)
    assert 0.6 <= took < 3.0, took  # one round trip: 0.3 s up, 0.3 s down


def test_reset_closes_both_sides_at_once(proxy: Proxy, pg_server: PgServer) -> None:
    with connect(proxy, pg_server, "victim") as conn:
        pid = conn.info.backend_pid
        assert proxy.reset_all() == 1
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
        wait_until(lambda: not admin.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchall(),
            timeout=10, message="the server side of the reset connection to go away")


def test_blackhole_holds_everything_until_restored(proxy: Proxy, pg_server: PgServer) -> None:
    with connect(proxy, pg_server, "held") as conn:
        proxy.blackhole()
        result: list[object] = []
        query = threading.Thread(
            target=lambda: result.append(conn.execute("SELECT 7").fetchone()), daemon=True)
        query.start()
        fresh: list[object] = []

        def connect_fresh() -> None:
            with connect(proxy, pg_server, "new") as other:
                fresh.append(other.execute("SELECT 8").fetchone())

        newcomer = threading.Thread(target=connect_fresh, daemon=True)
        newcomer.start()
        query.join(timeout=1.5)
        newcomer.join(timeout=0.5)
        assert query.is_alive(), "a query answered through a blackhole"
        assert newcomer.is_alive(), "a new connection got through a blackhole"
        assert not result
        proxy.restore()
        query.join(timeout=10)
        newcomer.join(timeout=10)
    assert result == [(7,)]
    assert fresh == [(8,)]


def test_a_rule_sees_statements_and_can_reset_at_one(proxy: Proxy, pg_server: PgServer) -> None:
    fired = threading.Event()

    def cut_marked(conn: ProxyConnection, direction: Direction,
                   message: Message) -> Verdict | None:
        if direction == "client" and "cut_here" in (conn.sql_of(message) or ""):
            fired.set()
            return Verdict.RESET
        return None

    proxy.add_rule(cut_marked)
    with connect(proxy, pg_server, "ruled") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 'cut_here'")
    assert fired.is_set()
    [seen] = proxy.connections()
    assert seen.reset_by_proxy
