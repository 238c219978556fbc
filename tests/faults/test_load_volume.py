"""RELIABILITY L1 (10,000 no-op tasks, 2 workers) and L4 (one run with a
10,000-element map step, 2 workers)."""

from __future__ import annotations

import uuid

import pytest

from tests.acceptance.harness import Database, Ledger
from tests.faults.support import deadlocks, log_lines_since, log_size
from tests.support.database import PgServer
from tests.support.worker_fixtures import Spawn

pytestmark = [pytest.mark.acceptance, pytest.mark.slow, pytest.mark.usefixtures("invariants")]

TASKS = 10_000
CHUNK = 1_000


def test_l1_10000_noop_tasks_on_two_workers_run_once_each(
        db: Database, ledger: Ledger, spawn: Spawn) -> None:
    workers = [spawn("noop", name=name, wait_ready=False, args=["--concurrency", "20"])
               for name in ("first", "second")]
    for worker in workers:
        worker.wait_for_event("worker.ready")
    run_ids: list[uuid.UUID] = []
    for _ in range(TASKS // CHUNK):  # enqueued while the workers drain
        run_ids += db.start_runs("noop", [{}] * CHUNK)

    counts = db.wait_runs(run_ids, timeout=180, workers=workers)
    assert counts == {"completed": TASKS}
    executions = ledger.executions_per_task(run_ids)
    assert len(executions) == TASKS
    repeated = {task: n for task, n in executions.items() if n != 1}
    assert not repeated, f"{len(repeated)} tasks ran more than once: {list(repeated.items())[:3]}"
    not_once = db.scalar("SELECT count(*) FROM flowworker.step_tasks WHERE run_id = ANY(%s)"
                         " AND (status <> 'completed' OR attempts_count <> 1)", (run_ids,))
    assert not_once == 0, f"{not_once} tasks not completed on their first attempt"
    completed = sum(len(w.find("task.completed")) for w in workers)
    assert completed == TASKS, f"{completed} task.completed events for {TASKS} tasks"
    pids = {row.pid for row in ledger.rows(run_ids=run_ids)}
    assert pids == {w.pid for w in workers}, "both workers should have taken part"
    assert all(w.alive() for w in workers)


def test_l4_one_run_with_a_10000_element_map_in_index_order_without_deadlocks(
        db: Database, spawn: Spawn, pg_server: PgServer, dbname: str) -> None:
    log_file = pg_server.cluster.log_file if pg_server.cluster is not None else None
    log_from = log_size(log_file)
    deadlocks_before = deadlocks(db, dbname)
    elements = [(i * 7919) % 10_007 for i in range(TASKS)]  # not the index itself
    workers = [spawn("wide", name=name, wait_ready=False,
                     args=["--concurrency", "20", "--batch-size", "20"])
               for name in ("first", "second")]
    for worker in workers:
        worker.wait_for_event("worker.ready")

    run_id = db.start_run("wide", elements)
    assert db.wait_runs([run_id], timeout=180, workers=workers) == {"completed": 1}
    output = db.run_outputs([run_id])[run_id]["cell"]
    assert len(output) == TASKS
    wrong = [i for i, value in enumerate(output) if value != 2 * elements[i]]
    assert not wrong, f"{len(wrong)} elements out of place, first at index {wrong[0]}"
    per_worker = [len(w.find("task.completed", step="cell")) for w in workers]
    assert sum(per_worker) == TASKS, per_worker
    assert min(per_worker) > 0, f"one worker did all the work: {per_worker}"

    retried = [e for w in workers for e in w.find("db.reconnecting")]
    for worker in workers:  # a backend's statistics are flushed when it exits at the latest
        worker.terminate()
        assert worker.wait_exit(timeout=30) == 0, worker.tail()
    found = deadlocks(db, dbname) - deadlocks_before
    assert found == 0, f"{found} deadlocks in pg_stat_database"
    logged = [line for line in log_lines_since(log_file, log_from)
              if "deadlock" in line.lower() and dbname in line]
    assert not logged, "deadlocks in the server log:\n" + "\n".join(logged[:10])
    assert not [e for e in retried if "Deadlock" in str(e.get("error"))], retried[:5]
