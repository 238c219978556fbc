"""flowworker.ops, the read layer under the operator commands, on runs the
real functions drove: what it counts, lists and shows."""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest

from flowworker import ops
from flowworker.errors import (
    DatabaseUnreachableError,
    InvalidInputError,
    SchemaError,
    UnknownFlowError,
    UnknownRunError,
)
from flowworker.ops.models import TaskCounts
from flowworker.schema import schema_version
from tests.cli.helpers import empty_database
from tests.sql.helpers import WORKER, claim, complete, define, fail, start
from tests.support.database import PgServer


@pytest.fixture
def shop(conn: psycopg.Connection) -> psycopg.Connection:
    """Flow `shop`: check -> (items -> pack, a map) and charge -> ship; one
    attempt, so a failure fails its run."""
    define(conn, "shop", {"check": [], "items": ["check"], "pack": ["items"],
                          "charge": ["check"], "ship": ["charge", "pack"]},
           maps=("pack",), max_attempts=1, base_delay=0)
    return conn


def work(conn: psycopg.Connection, flow: str, fail_step: str | None = None,
         rounds: int = 10) -> None:
    """Claim and finish whatever is ready, `rounds` times: items returns
    three elements, fail_step fails (and with it the run)."""
    for _ in range(rounds):
        for c in claim(conn, flow, batch_size=100):
            if c.step_slug == fail_step:
                fail(conn, c, f"{fail_step} broke\nTraceback line 2")
            else:
                complete(conn, c, [1, 2, 3] if c.step_slug == "items" else {"ok": c.step_slug})


def test_a_failed_run_in_detail(shop: psycopg.Connection) -> None:
    run_id = start(shop, "shop", {"order": 1})
    work(shop, "shop", fail_step="charge")
    detail = ops.show_run(shop, run_id)
    assert detail.run.status == "failed"
    assert detail.run.error_message == (
        "step charge failed: attempt 1 of 1: charge broke\nTraceback line 2")
    assert detail.input == {"order": 1}
    assert detail.run.ended_at is not None
    steps = {s.step_slug: s for s in detail.steps}
    assert [s.step_slug for s in detail.steps] == ["check", "items", "pack", "charge", "ship"]
    assert steps["charge"].status == "failed"
    assert steps["charge"].last_error == "attempt 1 of 1: charge broke\nTraceback line 2"
    assert steps["charge"].attempts == 1
    assert steps["ship"].depends_on == ["charge", "pack"]
    assert steps["ship"].status == "cancelled"
    assert steps["ship"].tasks == TaskCounts(0, 0, 0, 0, 0, 0)
    assert steps["check"].duration_seconds is not None


def test_map_counts_as_the_tasks_stand(shop: psycopg.Connection) -> None:
    run_id = start(shop, "shop", {})
    work(shop, "shop", rounds=2)  # check, then items and charge: pack's 3 tasks queued
    tasks = claim(shop, "shop", batch_size=100)
    packs = [c for c in tasks if c.step_slug == "pack"]
    assert len(packs) == 3
    complete(shop, packs[0], 1)
    steps = {s.step_slug: s for s in ops.show_run(shop, run_id).steps}
    assert steps["pack"].step_type == "map"
    assert steps["pack"].status == "started"
    assert steps["pack"].tasks == TaskCounts(total=3, queued=0, started=2, completed=1,
                                             failed=0, cancelled=0)
    assert steps["pack"].ended_at is None
    assert steps["pack"].duration_seconds is not None  # running: timed up to now
    assert steps["ship"].status == "created"


def test_the_last_error_is_the_newest_of_any_task(conn: psycopg.Connection) -> None:
    define(conn, "retry", {"items": [], "each": ["items"]}, maps=("each",), base_delay=0)
    run_id = start(conn, "retry", {})
    (items,) = claim(conn, "retry")
    complete(conn, items, [1, 2])
    for error in ("early", "late"):
        (task,) = claim(conn, "retry", batch_size=1)
        assert fail(conn, task, error) == "retry"
    steps = {s.step_slug: s for s in ops.show_run(conn, run_id).steps}
    assert steps["each"].last_error == "attempt 1 of 3: late"
    assert steps["each"].attempts == 2


def test_an_unknown_run_is_an_error(shop: psycopg.Connection) -> None:
    with pytest.raises(UnknownRunError, match="does not exist"):
        ops.show_run(shop, uuid.uuid4())


@pytest.mark.parametrize("typed", ["nope", "", "123", "3f2a-zz"])
def test_a_run_id_that_is_not_a_uuid_is_bad_input(typed: str) -> None:
    with pytest.raises(InvalidInputError, match="not a UUID"):
        ops.parse_run_id(typed)


def test_status_counts_every_status_and_the_queue(shop: psycopg.Connection) -> None:
    failed = start(shop, "shop", {})
    work(shop, "shop", fail_step="charge")
    done = start(shop, "shop", {})
    work(shop, "shop")
    cancelled = start(shop, "shop", {})
    shop.execute("SELECT flowworker.cancel_run(%s)", (cancelled,))
    start(shop, "shop", {})  # going: its first task queued
    shop.execute("SELECT flowworker.register_worker(%s, 'shop', 'h', 1)", (WORKER,))
    report = ops.status(shop)
    (flow,) = report.flows
    assert flow.flow_slug == "shop"
    assert flow.runs == {"started": 1, "paused": 0, "failed": 1, "cancelled": 1}
    assert flow.completed_recently == 1
    assert not flow.completed_capped
    assert flow.queue.depth == 1
    assert flow.queue.visible == 1
    assert flow.queue.oldest_visible_seconds is not None
    assert flow.live_workers == 1
    assert {r.status for r in ops.list_runs(shop, ops.RunFilter())} == {
        "started", "completed", "failed", "cancelled"}
    assert ops.show_run(shop, done).run.status == "completed"
    assert ops.show_run(shop, failed).run.status == "failed"


def test_completed_runs_are_counted_up_to_the_cap(shop: psycopg.Connection) -> None:
    for _ in range(3):
        start(shop, "shop", {})
    work(shop, "shop")
    (flow,) = ops.status(shop, cap=2).flows
    assert (flow.completed_recently, flow.completed_capped) == (2, True)
    shop.execute("UPDATE flowworker.runs SET started_at = now() - interval '2 hours'")
    (flow,) = ops.status(shop).flows
    assert (flow.completed_recently, flow.completed_capped) == (0, False)


def test_list_filters_and_pages_newest_first(shop: psycopg.Connection) -> None:
    define(shop, "other", {"one": []})
    runs = [start(shop, "shop" if i % 2 else "other", {"i": i}) for i in range(7)]
    shop.execute("UPDATE flowworker.runs r SET started_at = now() - x.ord * interval '1 minute' "
                 "FROM unnest(%s::uuid[]) WITH ORDINALITY AS x(run_id, ord) "
                 "WHERE r.run_id = x.run_id", (list(reversed(runs)),))
    newest_first = list(reversed(runs))
    assert [r.run_id for r in ops.list_runs(shop, ops.RunFilter())] == newest_first
    page = ops.list_runs(shop, ops.RunFilter(limit=3))
    rest = ops.list_runs(shop, ops.RunFilter(before=(page[-1].started_at, page[-1].run_id)))
    assert [r.run_id for r in page + rest] == newest_first
    assert [r.run_id for r in ops.list_runs(shop, ops.RunFilter(flow="shop"))] == [
        r for r in newest_first if runs.index(r) % 2]
    now = ops.database_now(shop)
    cut = now - timedelta(minutes=3, seconds=30)
    recent = ops.list_runs(shop, ops.RunFilter(started_after=cut))
    assert len(recent) == 3
    older = ops.list_runs(shop, ops.RunFilter(started_before=cut))
    assert len(older) == 4
    assert ops.list_runs(shop, ops.RunFilter(status="failed")) == []


@pytest.mark.parametrize(("where", "error"), [
    (ops.RunFilter(flow="nope"), UnknownFlowError),
    (ops.RunFilter(status="stuck"), InvalidInputError),
    (ops.RunFilter(limit=0), InvalidInputError),
])
def test_a_filter_that_cannot_match_is_an_error(shop: psycopg.Connection,
                                                where: ops.RunFilter,
                                                error: type[Exception]) -> None:
    with pytest.raises(error):
        ops.list_runs(shop, where)


def test_list_by_status_reads_the_partial_index(shop: psycopg.Connection) -> None:
    """The plan of a status filter, with the planner told the table is large."""
    shop.execute("SET enable_seqscan = off")
    plan = "\n".join(r[0] for r in shop.execute(
        "EXPLAIN " + ops_query("ops_list_runs"),
        {"flow": None, "status": "failed", "started_after": None, "started_before": None,
         "before_started": None, "before_run_id": None, "limit": 50}, prepare=False))
    assert "runs_flow_status_idx" in plan
    plan = "\n".join(r[0] for r in shop.execute("EXPLAIN " + ops_query("ops_runs_by_status")))
    assert "runs_flow_status_idx" in plan


def ops_query(name: str) -> str:
    from flowworker.schema import queries

    return queries()[name]


def test_workers_live_lost_and_stopped(conn: psycopg.Connection) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    for worker_id in ids:
        conn.execute("SELECT flowworker.register_worker(%s, 'f', 'host', 7)", (worker_id,))
    conn.execute("UPDATE flowworker.workers SET last_heartbeat_at = now() - interval '5 minutes'"
                 " WHERE worker_id = %s", (ids[1],))
    conn.execute("SELECT flowworker.stop_worker(%s)", (ids[2],))
    states = {w.worker_id: w.state for w in ops.workers(conn)}
    assert states == {ids[0]: "live", ids[1]: "lost", ids[2]: "stopped"}
    assert [w.state for w in ops.workers(conn)] == ["live", "lost", "stopped"]
    assert len(ops.workers(conn, limit=1)) == 1


def test_flows_with_their_queues(shop: psycopg.Connection) -> None:
    start(shop, "shop", {})
    (flow,) = ops.flows(shop)
    assert (flow.flow_slug, flow.steps, flow.max_attempts) == ("shop", 5, 1)
    assert (flow.queue.depth, flow.queue.visible) == (1, 1)
    assert flow.paused_at is None


def test_a_paused_flow_says_since_when(shop: psycopg.Connection) -> None:
    paused = shop.execute("SELECT paused_at FROM flowworker.pause_flow('shop')").fetchone()
    assert paused is not None
    (paused_at,) = paused
    (flow,) = ops.flows(shop)
    assert flow.paused_at == paused_at is not None
    shop.execute("SELECT flowworker.resume_flow('shop')")
    (flow,) = ops.flows(shop)
    assert flow.paused_at is None


def test_health(db_url: str, pg_server: PgServer) -> None:
    assert ops.health(db_url) == ops.models.Health(True, True, schema_version(),
                                                   schema_version(), None, 0)
    with empty_database(pg_server) as empty:
        report = ops.health(empty)
        assert (report.ok, report.database_reachable, report.exit_code) == (False, True, 4)
        assert report.problem is not None
        assert "not installed" in report.problem
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE flowworker.migrations SET min_worker_version = 99 "
                     "WHERE version = (SELECT max(version) FROM flowworker.migrations)")
    report = ops.health(db_url)
    assert (report.ok, report.exit_code) == (False, 4)
    assert report.problem is not None
    assert "upgrade flowworker" in report.problem


def test_an_unreachable_database() -> None:
    from flowworker.devdb import free_port

    report = ops.health(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    assert (report.ok, report.database_reachable) == (False, False)
    assert report.exit_code == DatabaseUnreachableError.exit_code == 3
    assert report.problem is not None
    assert report.problem.startswith("database unreachable")


def test_reads_without_the_schema_say_so(pg_server: PgServer) -> None:
    with empty_database(pg_server) as empty, psycopg.connect(empty, autocommit=True) as conn:
        with pytest.raises(SchemaError, match="run `flowworker migrate`"):
            ops.status(conn)
        with pytest.raises(SchemaError):
            ops.list_runs(conn, ops.RunFilter())
