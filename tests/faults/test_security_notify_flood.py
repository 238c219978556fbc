"""RELIABILITY S3: a role that may only connect floods the flow's NOTIFY
channel (NOTIFY needs no privilege) with thousands of notifications a
second. NOTIFY is a hint: nothing changes in flowworker's tables, and the
worker's claim rate stays bounded (its producer debounces wake-ups by 2 ms,
so at most ~500 claims/s; we allow 600).

Claims are counted with pg_stat_user_functions (track_functions = 'all' set
on the test database before the worker connects): calls of
flowworker.start_tasks, empty claims included.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.acceptance.harness import Database, wait_until
from tests.support.database import PgServer
from tests.support.worker_fixtures import Spawn

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]

FLOOD_SECONDS = 5.0
FLOOD_THREADS = 2
MAX_CLAIMS_PER_SECOND = 600.0

STATE = """
SELECT md5(coalesce((SELECT string_agg(r::text, ',' ORDER BY run_id) FROM flowworker.runs r), '')
        || coalesce((SELECT string_agg(s::text, ',' ORDER BY run_id, step_slug)
                     FROM flowworker.step_states s), '')
        || coalesce((SELECT string_agg(t::text, ',' ORDER BY run_id, step_slug, task_index)
                     FROM flowworker.step_tasks t), '')
        || coalesce((SELECT string_agg(q::text, ',' ORDER BY msg_id) FROM flowworker.q_noop q), '')
        || coalesce((SELECT string_agg(a::text, ',' ORDER BY msg_id) FROM flowworker.a_noop a), ''))
"""


@pytest.fixture
def flooder_url(pg_server: PgServer, db_url: str, dbname: str) -> Iterator[str]:
    """A login role with no privilege beyond CONNECT (which PUBLIC has)."""
    role = f"flooder_{uuid.uuid4().hex[:10]}"
    pg_server.execute(f"CREATE ROLE {role} LOGIN")
    try:
        yield make_conninfo(db_url, user=role, application_name="flowworker_test_flooder")
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE usename = %s", (role,))
            conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
        pg_server.execute(f"DROP ROLE {role}")


def start_tasks_calls(db: Database) -> int:
    value = db.scalar("SELECT calls FROM pg_stat_user_functions"
                      " WHERE schemaname = 'flowworker' AND funcname = 'start_tasks'")
    return int(value or 0)


def settled_calls(db: Database) -> int:
    """The call count once every worker backend has flushed its statistics
    (each flushes at most once a second, when its transaction ends)."""
    last = [start_tasks_calls(db), time.monotonic()]

    def stable() -> int | None:
        now = start_tasks_calls(db)
        if now != last[0]:
            last[:] = [now, time.monotonic()]
            return None
        return now if time.monotonic() - last[1] >= 2.5 else None

    return wait_until(stable, timeout=30, interval=0.25, message="start_tasks stats to settle")


def flood(url: str, channel: str, until: float, sent: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        notify = sql.SQL("NOTIFY {}").format(sql.Identifier(channel))
        junk = sql.SQL("SELECT pg_notify({}, repeat('x', 4000))").format(sql.Literal(channel))
        count = 0
        while time.monotonic() < until:
            with conn.pipeline():
                for i in range(200):
                    conn.execute(junk if i % 50 == 0 else notify)
            count += 200
        sent.append(count)


@pytest.mark.slow
def test_s3_notify_flood_changes_nothing_and_claims_stay_bounded(
        db: Database, spawn: Spawn, pg_server: PgServer, dbname: str, flooder_url: str) -> None:
    pg_server.execute(f"ALTER DATABASE {dbname} SET track_functions = 'all'")
    # A long fallback poll and a fast heartbeat: idle, the worker claims
    # rarely, and its pool connections end a transaction often enough to
    # flush their statistics.
    worker = spawn("noop", name="worker", args=["--poll-max-interval", "30"],
                   env={"FLOWWORKER_HEARTBEAT_INTERVAL": "0.5"})
    done = db.start_run("noop", {})
    assert db.wait_runs([done], timeout=10, workers=[worker]) == {"completed": 1}

    with psycopg.connect(flooder_url, autocommit=True) as conn, pytest.raises(
            psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT flowworker.start_flow('noop', '{}')")

    state = db.scalar(STATE)
    before = settled_calls(db)
    sent: list[int] = []
    began = time.monotonic()
    until = began + FLOOD_SECONDS
    threads = [threading.Thread(target=flood, args=(flooder_url, "flowworker_noop", until, sent))
               for _ in range(FLOOD_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=FLOOD_SECONDS + 30)
    took = time.monotonic() - began
    after = settled_calls(db)

    rate = sum(sent) / took
    assert rate >= 1000, f"the flood was too weak to mean anything: {rate:.0f} NOTIFY/s"
    claims = after - before
    claim_rate = claims / took
    print(f"S3: {sum(sent)} NOTIFYs in {took:.1f} s ({rate:.0f}/s); "  # noqa: T201
          f"{claims} claims ({claim_rate:.0f}/s)")
    assert claims > 0, "the flood never reached the worker: the test measured nothing"
    assert claim_rate <= MAX_CLAIMS_PER_SECOND, (
        f"{claims} start_tasks calls in {took:.1f} s ({claim_rate:.0f}/s) under a NOTIFY flood")
    assert db.scalar(STATE) == state, "the NOTIFY flood changed flowworker's tables"

    assert worker.alive(), worker.tail()
    following = db.start_run("noop", {})
    assert db.wait_runs([following], timeout=5, workers=[worker]) == {"completed": 1}
