"""RELIABILITY F6: per-task timeouts, async and sync handlers, many at once.

tests/acceptance/test_timeouts.py follows one task through three timed-out
attempts. Here several tasks time out together on attempt 1 and succeed on
attempt 2, and the worker must stay healthy afterwards:

- async (8 at once): each cancelled within timeout + 1 s, its attempt
  failed as a timeout, retried after the backoff (base_delay 1 s), and
  completed by attempt 2;
- sync (4 at once, 2 threads): each attempt failed at timeout + 1 s at the
  latest, its thread abandoned; the abandoned threads stay blocked for a
  long time and must not hold the worker's 2 sync threads (other plain-def
  work still runs at once); when they finally return, their late results
  are ignored (the ledger shows they returned, the database keeps attempt
  2's output and attempt 1's timeout).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from flowworker.devdb import free_port
from tests.acceptance.harness import (
    Database,
    Ledger,
    LedgerRow,
    WorkerProcess,
    http_get,
    wait_until,
)
from tests.support.worker_fixtures import Spawn

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]

TIMEOUT = 1.0   # stuck_sync / stuck_async: timeout=1, base_delay=1
BACKOFF = 1.0
SLACK = 0.25    # between the handler's start and its ledger row, a log line and its reading


def first_attempts(ledger: Ledger, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, LedgerRow]:
    return {r.run_id: r for r in ledger.rows(run_ids=run_ids) if r.attempt == 1}


def assert_timeouts_then_retries(db: Database, ledger: Ledger, worker: WorkerProcess,
                                 run_ids: list[uuid.UUID]) -> None:
    assert db.wait_runs(run_ids, timeout=30, workers=[worker]) == {"completed": len(run_ids)}
    firsts = first_attempts(ledger, run_ids)
    seconds = {r.run_id: r for r in ledger.rows(run_ids=run_ids) if r.attempt == 2}
    assert set(firsts) == set(seconds) == set(run_ids)
    for run_id in run_ids:
        [failure] = worker.find("task.failed", run_id=run_id)
        assert (str(failure["attempt"]), failure["outcome"]) == ("1", "timeout"), failure
        failed_after = failure["_received"] - firsts[run_id].at.timestamp()
        assert TIMEOUT - 0.2 <= failed_after <= TIMEOUT + 1 + SLACK, (
            f"attempt 1 failed {failed_after:.2f} s after it started")
        retried_after = (seconds[run_id].at - firsts[run_id].at).total_seconds()
        assert retried_after >= TIMEOUT + BACKOFF - 0.2, (
            f"attempt 2 started {retried_after:.2f} s after attempt 1: no backoff")
    for task in db.tasks(run_ids):
        assert (task.status, task.attempts_count) == ("completed", 2), task
        assert task.output == {"pid": worker.pid, "attempt": 2}, task


def assert_healthy(base: str) -> None:
    assert http_get(base + "/healthz")[0] == 200
    assert http_get(base + "/readyz")[0] == 200


def test_f6_async_handlers_over_their_timeout_are_cancelled_and_retried(
        db: Database, ledger: Ledger, spawn: Spawn) -> None:
    port = free_port()
    worker = spawn("stuck_async", name="worker", args=["--metrics-addr", f":{port}"])
    run_ids = db.start_runs("stuck_async", [{}] * 8)
    assert_timeouts_then_retries(db, ledger, worker, run_ids)
    firsts = first_attempts(ledger, run_ids)
    cancels = {r.run_id: r for r in ledger.rows(run_ids=run_ids, note="cancelled",
                                                 executions=False)}
    assert set(cancels) == set(run_ids), "not every overrunning async handler was cancelled"
    for run_id, cancel in cancels.items():
        took = (cancel.at - firsts[run_id].at).total_seconds()
        assert took <= TIMEOUT + 1, f"cancelled {took:.2f} s after it started"
    assert_healthy(f"http://127.0.0.1:{port}")
    following = db.start_runs("stuck_async", [{}])  # attempt 1 overruns again: not waited for
    wait_until(lambda: ledger.count(run_ids=following) == 1, timeout=5,
               message="the worker to take new work after the timeouts")


def test_f6_sync_handlers_over_their_timeout_are_abandoned_and_their_late_results_ignored(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    port = free_port()
    worker = spawn("stuck_sync", "drain", name="worker", env={"FLOWWORKER_SYNC_THREADS": "2"},
                   args=["--concurrency", "4", "--metrics-addr", f":{port}"])
    run_ids = db.start_runs("stuck_sync", [{"gate": str(gate)}] * 4)
    assert_timeouts_then_retries(db, ledger, worker, run_ids)
    assert not ledger.rows(run_ids=run_ids, note="returned", executions=False), (
        "the gate is closed: attempt 1 cannot have returned yet")

    # Four threads are still blocked in attempt 1; the two sync threads are free.
    assert_healthy(f"http://127.0.0.1:{port}")
    others = db.start_runs("drain", [{}] * 6)
    assert db.wait_runs(others, timeout=5, workers=[worker]) == {"completed": 6}, (
        "abandoned threads hold the worker's sync threads")

    gate.touch()
    wait_until(lambda: len(ledger.rows(run_ids=run_ids, note="returned",
                                       executions=False)) == 4,
               timeout=10, message="the abandoned attempts to return")
    for task in db.tasks(run_ids):
        assert (task.status, task.attempts_count) == ("completed", 2), task
        assert task.output == {"pid": worker.pid, "attempt": 2}, (
            f"a late result of attempt 1 was applied: {task}")
    assert not worker.find("task.completed", attempt=1, step="stall")
    assert not worker.find("task.stale", step="stall")
    assert worker.alive(), worker.tail()
    assert_healthy(f"http://127.0.0.1:{port}")
