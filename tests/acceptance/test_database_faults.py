"""Issue acceptance #6: the worker's connections are terminated, and the
server restarts, mid-run. The worker recovers by itself, without exiting,
and every run completes exactly once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from functools import partial

import psycopg
import pytest

from tests.acceptance.harness import (
    Database,
    Ledger,
    WorkerProcess,
    terminate_backends,
    wait_until,
)
from tests.apps.flows import diamond_expected
from tests.apps.ledger import APPLICATION_NAME as LEDGER_APP
from tests.support.database import PgServer
from tests.support.worker_fixtures import Spawn

pytestmark = pytest.mark.acceptance

RUNS = 150
# The test's own sessions: the handlers' ledger and the I7 sampler.
SPARED = [LEDGER_APP, "flowworker_test_i7"]


def completed(db: Database, run_ids: Sequence[uuid.UUID]) -> int:
    return db.run_statuses(run_ids)["completed"]


def at_least(db: Database, run_ids: Sequence[uuid.UUID], n: int) -> bool:
    return completed(db, run_ids) >= n


def assert_completed_exactly_once(db: Database, ledger: Ledger, worker: WorkerProcess,
                                  run_ids: Sequence[uuid.UUID]) -> None:
    assert db.wait_runs(run_ids, timeout=60, workers=[worker]) == {"completed": len(run_ids)}
    outputs = db.run_outputs(run_ids)
    wrong = [n for n, run_id in enumerate(run_ids) if outputs[run_id] != diamond_expected(n)]
    assert not wrong, f"{len(wrong)} runs with a wrong output"
    tasks = db.tasks(run_ids)
    assert all(t.status == "completed" for t in tasks)
    executions = ledger.executions_per_task(run_ids)
    assert set(executions) == {(t.run_id, t.step_slug, t.task_index) for t in tasks}
    repeated = {task: n for task, n in executions.items() if n > 1}
    assert not repeated, (
        f"{len(repeated)} tasks ran more than once although no claim could expire: "
        f"{list(repeated.items())[:3]}")
    assert worker.alive(), "the worker must recover by itself, not exit"


def test_worker_survives_pg_terminate_backend_mid_run(
        db: Database, ledger: Ledger, spawn: Spawn, pg_server: PgServer, dbname: str) -> None:
    worker = spawn("diamond", name="survivor")
    run_ids = db.start_runs("diamond", [{"n": n, "sleep": 0.02} for n in range(RUNS)])
    for fraction in (0.2, 0.5, 0.8):
        wait_until(partial(at_least, db, run_ids, int(fraction * RUNS)), timeout=60,
                   interval=0.02, message=f"{fraction:.0%} of the runs completed")
        listening = len(worker.find("listener.connected"))
        killed = terminate_backends(pg_server.admin_url, dbname, spare_applications=SPARED)
        assert killed >= 1
        worker.wait_for_event("listener.connected", count=listening + 1, timeout=10)
    assert_completed_exactly_once(db, ledger, worker, run_ids)
    assert worker.find("listener.lost"), "no listener.lost event"


def test_worker_survives_a_postgres_restart_mid_run(
        db: Database, ledger: Ledger, spawn: Spawn, cluster_server: PgServer) -> None:
    cluster = cluster_server.cluster
    assert cluster is not None
    worker = spawn("diamond", name="survivor")
    run_ids = db.start_runs("diamond", [{"n": n, "sleep": 0.02} for n in range(RUNS)])
    wait_until(lambda: completed(db, run_ids) >= 0.3 * RUNS, timeout=60, interval=0.02,
               message="30% of the runs completed")
    lost = len(worker.find("listener.lost")) + len(worker.find("db.reconnecting"))
    listening = len(worker.find("listener.connected"))
    db.close()
    cluster.stop("fast")
    try:
        wait_until(lambda: len(worker.find("listener.lost")) + len(worker.find("db.reconnecting"))
                   > lost, timeout=15,
                   message=lambda: "listener.lost or db.reconnecting\n" + worker.tail())
        assert worker.alive()
    finally:
        cluster.start()
    worker.wait_for_event("listener.connected", count=listening + 1, timeout=15)
    assert_completed_exactly_once(db, ledger, worker, run_ids)


def test_listener_killed_comes_back_and_runs_still_start(
        db: Database, ledger: Ledger, spawn: Spawn, pg_server: PgServer, dbname: str) -> None:
    """RELIABILITY D2: only the LISTEN backend dies; a run started right
    after still starts within the poll bound, and the listener is back
    within 5 s."""
    poll_max = 1.0
    worker = spawn("ping", args=["--poll-max-interval", str(poll_max)])
    listening = len(worker.find("listener.connected"))
    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND application_name = 'flowworker-listener'",
            (dbname,)).fetchall()[0][0]
    assert killed == 1, f"expected one listener backend, terminated {killed}"
    run_id = db.start_run("ping", {})
    committed = time.time()
    [row] = wait_until(partial(ledger.rows, run_ids=[run_id]), timeout=10, interval=0.01,
                       message=lambda: "the run to start without a listener\n" + worker.tail())
    started_after = row.at.timestamp() - committed
    assert started_after < poll_max + 0.5, f"started {started_after:.2f} s after the commit"
    worker.wait_for_event("listener.connected", count=listening + 1, timeout=5)
    assert worker.find("listener.lost"), "no listener.lost event"
    assert worker.alive()
