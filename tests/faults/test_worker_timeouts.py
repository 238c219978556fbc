"""RELIABILITY F6: per-task timeouts, async and sync handlers, many at once.

tests/acceptance/test_timeouts.py follows one task through three timed-out
attempts. Here several tasks time out together on attempt 1 and succeed on
attempt 2, and the worker must stay healthy afterwards:

- async (8 at once): each cancelled within timeout + 1 s, its attempt
  failed as a timeout, retried after the backoff (base_delay 1 s), and
  completed by attempt 2;
- sync (4 at once, concurrency 6): each attempt failed at timeout + 1 s at
  the latest, its thread abandoned; an abandoned thread cannot be stopped,
  so it keeps its thread and its slot until it returns (a gauge counts
  them), and the worker never runs more handler threads than its
  concurrency; the slots left still run other work; when the threads
  finally return, their late results are ignored (the ledger shows they
  returned, the database keeps attempt 2's output and attempt 1's timeout).
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


def overrunning(base: str) -> float:
    """The worker's flowworker_handler_threads_overrunning gauge."""
    status, body = http_get(base + "/metrics")
    assert status == 200
    for line in body.splitlines():
        if line.startswith("flowworker_handler_threads_overrunning "):
            return float(line.split()[1])
    raise AssertionError("no flowworker_handler_threads_overrunning in /metrics")


def test_f6_sync_handlers_over_their_timeout_are_abandoned_and_their_late_results_ignored(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = spawn("stuck_sync", "drain", name="worker",
                   args=["--concurrency", "6", "--metrics-addr", f":{port}"])
    run_ids = db.start_runs("stuck_sync", [{"gate": str(gate)}] * 4)
    assert_timeouts_then_retries(db, ledger, worker, run_ids)
    assert not ledger.rows(run_ids=run_ids, note="returned", executions=False), (
        "the gate is closed: attempt 1 cannot have returned yet")

    # Four threads are still blocked in attempt 1, each keeping its thread and
    # its slot; the two slots left still run other work.
    assert overrunning(base) == 4
    assert len(worker.find("task.thread_overrun", step="stall")) == 4
    assert_healthy(base)
    others = db.start_runs("drain", [{}] * 6)
    assert db.wait_runs(others, timeout=10, workers=[worker]) == {"completed": 6}

    gate.touch()
    wait_until(lambda: len(ledger.rows(run_ids=run_ids, note="returned",
                                       executions=False)) == 4,
               timeout=10, message="the abandoned attempts to return")
    wait_until(lambda: overrunning(base) == 0, timeout=5,
               message="the returned threads to give their slots back")
    for task in db.tasks(run_ids):
        assert (task.status, task.attempts_count) == ("completed", 2), task
        assert task.output == {"pid": worker.pid, "attempt": 2}, (
            f"a late result of attempt 1 was applied: {task}")
    assert not worker.find("task.completed", attempt=1, step="stall")
    assert not worker.find("task.stale", step="stall")
    assert worker.alive(), worker.tail()
    assert_healthy(base)


def test_f6_handler_threads_that_ignore_their_timeout_never_exceed_the_concurrency(
        db: Database, ledger: Ledger, spawn: Spawn) -> None:
    """`overrun` ignores its 1 s timeout and runs 3 s every attempt. Were a
    timed-out thread's slot given back while it runs, the worker would claim
    the next task into it and start one more thread each second."""
    concurrency = 3
    worker = spawn("overrun", name="worker", args=["--concurrency", str(concurrency)])
    run_ids = db.start_runs("overrun", [{}] * 6)
    assert db.wait_runs(run_ids, timeout=60, workers=[worker]) == {"failed": 6}
    wait_until(lambda: len(ledger.rows(run_ids=run_ids, note="end", executions=False)) == 12,
               timeout=10, message="the last abandoned threads to return")
    spans: dict[tuple[uuid.UUID, int], list[float]] = {}
    for row in ledger.rows(run_ids=run_ids, executions=False):
        if row.note in ("start", "end"):
            spans.setdefault((row.run_id, row.attempt), []).append(row.at.timestamp())
    assert len(spans) == 12, "6 runs x 2 attempts, each with a start and an end"
    edges = sorted([(span[0], 1) for span in spans.values()]
                   + [(span[1], -1) for span in spans.values()], key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    assert most <= concurrency, f"{most} handler threads ran at once, over {concurrency}"
    assert len(worker.find("task.thread_overrun", step="hang")) == 12
    assert worker.alive(), worker.tail()
