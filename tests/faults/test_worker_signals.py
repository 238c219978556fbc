"""RELIABILITY F2 (SIGTERM with 50 in flight and 200 queued) and F3 (SIGTERM
while handlers overrun the drain timeout, then a second signal).

tests/acceptance/test_shutdown.py checks a small drain (4 running, 12
waiting) and a drain of three overrunning handlers. These are the rows'
numbers and the parts it leaves out:

F2 - the leaving worker serves two flows: `drain` (50 plain-`def` handlers
     running, 10 more claimed but waiting for one of its 50 threads) and
     `noop` (200 runs queued behind them). A claim log (a trigger on
     step_tasks) shows every claim with its worker and time, so "no claim
     after the signal" is checked in the database, not guessed from logs.
     The helper serves `drain` only, so the 200 `noop` runs stay queued
     for the leaving worker to (wrongly) take.
F3 - some handlers finish inside the drain timeout and some overrun it, in
     one worker: the finished ones are recorded, the overrunning ones
     handed back (attempt not spent, no error), and a helper that is
     already running completes them once.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.acceptance.harness import APP, Database, Ledger, WorkerProcess, wait_until
from tests.faults.support import claims, install_claim_log
from tests.support.worker_fixtures import Spawn

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]

RUNNING = 50
CLAIMED_NOT_STARTED = 10
QUEUED = 200
HANDLER_SECONDS = 2.0
SHUTDOWN_TIMEOUT = 10.0


def assert_stopped_cleanly(db: Database, worker: WorkerProcess) -> None:
    rows = db.query("SELECT stopped_at IS NOT NULL FROM flowworker.workers WHERE pid = %s",
                    (worker.pid,))
    assert rows, f"no flowworker.workers row for pid {worker.pid}"
    assert all(stopped for (stopped,) in rows), "flowworker.workers.stopped_at not set"
    assert worker.find("worker.stopped"), "no worker.stopped event"


def test_f2_sigterm_with_50_in_flight_and_200_queued(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    install_claim_log(db)
    gate = tmp_path / "gate"
    leaving = spawn("drain", "noop", name="leaving", env={"FLOWWORKER_SYNC_THREADS": "50"},
                    args=["--concurrency", str(RUNNING + CLAIMED_NOT_STARTED),
                          "--shutdown-timeout", str(SHUTDOWN_TIMEOUT)])
    held = db.start_runs("drain", [{"gate": str(gate), "sleep": HANDLER_SECONDS}]
                         * (RUNNING + CLAIMED_NOT_STARTED))

    def all_claimed() -> bool:
        started = sum(t.status == "started" for t in db.tasks(held))
        return started == len(held) and ledger.count(run_ids=held) == RUNNING

    wait_until(all_claimed, timeout=20, message=lambda: (
        f"{RUNNING} running and {CLAIMED_NOT_STARTED} claimed in the leaving worker; "
        f"ledger {ledger.count(run_ids=held)}\n" + leaving.tail()))
    queued = db.start_runs("noop", [{}] * QUEUED)
    helper = spawn("drain", name="helper", args=["--concurrency", "20"])
    assert ledger.count(run_ids=held) == RUNNING, "the helper found work before the signal"
    running = {r.run_id for r in ledger.rows(run_ids=held)}
    unstarted = [r for r in held if r not in running]

    signalled = leaving.terminate()
    gate.touch()  # the 50 now take HANDLER_SECONDS more
    leaving.wait_for_event("worker.draining", timeout=5)

    # Claimed but not started: handed back at once, started by the helper within 1 s.
    starts = wait_until(
        lambda: (rows if len(rows := ledger.rows(run_ids=unstarted)) == len(unstarted)
                 else None), timeout=10, message=lambda: (
            "the unstarted tasks to start in the helper\n" + leaving.tail() + helper.tail()))
    assert {r.pid for r in starts} == {helper.pid}
    late = max(r.at.timestamp() for r in starts) - signalled
    assert late <= 1.0, f"the helper started the handed-back tasks {late:.2f} s after SIGTERM"

    code = leaving.wait_exit(timeout=SHUTDOWN_TIMEOUT + 5)
    exited = time.time() - signalled
    assert code == 0, leaving.tail()
    assert exited <= SHUTDOWN_TIMEOUT + 1, f"exited {exited:.1f} s after SIGTERM"

    # The 50 completed in the leaving worker, once, on attempt 1.
    for task in db.tasks(list(running), step="work"):
        assert (task.status, task.attempts_count) == ("completed", 1), task
        assert task.output == {"pid": leaving.pid, "attempt": 1}, task
    assert len(leaving.find("task.completed", step="work")) == RUNNING
    assert len(leaving.find("task.released")) == CLAIMED_NOT_STARTED

    # No claim after the signal: not one of the 200 queued runs, nothing else.
    after_signal = claims(db, worker_ids=sorted(leaving.worker_ids), after=signalled)
    assert not after_signal, f"the leaving worker claimed after SIGTERM: {after_signal[:5]}"
    assert {t.status for t in db.tasks(queued)} == {"queued"}
    assert {t.attempts_count for t in db.tasks(queued)} == {0}
    assert not [r for r in ledger.rows() if r.pid == leaving.pid and r.at.timestamp() > signalled]
    assert_stopped_cleanly(db, leaving)

    assert db.wait_runs(held, timeout=20, workers=[helper]) == {"completed": len(held)}
    for task in db.tasks(unstarted, step="work"):
        assert (task.status, task.attempts_count) == ("completed", 1), (
            f"handing back must not spend an attempt: {task}")
    # The queued work was there for the taking all along.
    taker = spawn("noop", name="taker", args=["--concurrency", "50"])
    assert db.wait_runs(queued, timeout=30, workers=[taker]) == {"completed": QUEUED}
    assert {t.attempts_count for t in db.tasks(queued)} == {1}


@pytest.mark.parametrize(("flow", "hurry"), [
    pytest.param("gated", "second-signal", id="async-second-signal"),
    pytest.param("gated_sync", "drain-timeout", id="sync-drain-timeout"),
])
def test_f3_overrunning_handlers_are_handed_back_and_finish_once_elsewhere(
        flow: str, hurry: str, db: Database, ledger: Ledger, spawn: Spawn,
        tmp_path: Path) -> None:
    quick_gate, slow_gate = tmp_path / "quick", tmp_path / "slow"
    drain_timeout = 30.0 if hurry == "second-signal" else 3.0
    leaving = spawn(flow, app=APP, name="leaving",
                    args=["--shutdown-timeout", str(drain_timeout)])
    quick = db.start_runs(flow, [{"gate": str(quick_gate)}] * 3)
    slow = db.start_runs(flow, [{"gate": str(slow_gate)}] * 3)
    wait_until(lambda: ledger.count(run_ids=quick + slow, step="hold") == 6, timeout=10,
               message=lambda: "6 hold tasks running in the leaving worker\n" + leaving.tail())
    helper = spawn(flow, app=APP, name="helper")

    first = leaving.terminate()
    leaving.wait_for_event("worker.draining", timeout=5)
    quick_gate.touch()
    leaving.wait_for_event("task.completed", step="hold", count=3, timeout=10)
    if hurry == "second-signal":
        assert leaving.alive(), "the leaving worker must wait for its overrunning handlers"
        second = leaving.send_signal(signal.SIGINT)
        code = leaving.wait_exit(timeout=10)
        took = time.time() - second
        assert took <= 2.0, f"exited {took:.2f} s after the second signal: not at once"
    else:
        code = leaving.wait_exit(timeout=drain_timeout + 10)
        took = time.time() - first
        assert drain_timeout - 0.2 <= took <= drain_timeout + 2, (
            f"exited {took:.2f} s after SIGTERM with a drain timeout of {drain_timeout} s")
    assert code == 0, leaving.tail()
    assert_stopped_cleanly(db, leaving)

    for task in db.tasks(quick, step="hold"):
        assert (task.status, task.attempts_count) == ("completed", 1), task
        assert task.output == {"pid": leaving.pid, "attempt": 1}, task
    assert len(leaving.find("task.released")) == 3
    assert not leaving.find("task.failed"), "handing back is not a failure"
    # Handed back, not left `started`: the helper took them at once.
    def slow_in_helper() -> bool:
        tasks = db.tasks(slow, step="hold")
        return (all(t.status == "started" and t.attempts_count == 1 for t in tasks)
                and ledger.count(run_ids=slow, step="hold") == 6)

    wait_until(slow_in_helper, timeout=5, message=lambda: (
        f"the helper to run the handed-back tasks: {db.tasks(slow, step='hold')}"))
    slow_gate.touch()
    assert db.wait_runs(quick + slow, timeout=20, workers=[helper]) == {"completed": 6}
    for task in db.tasks(slow, step="hold"):
        assert (task.status, task.attempts_count, task.error_message) == ("completed", 1, None), (
            f"an overrunning task must be handed back without spending an attempt: {task}")
        assert task.output == {"pid": helper.pid, "attempt": 1}, task
    holds = ledger.rows(run_ids=slow, step="hold")
    assert sorted(r.pid for r in holds) == sorted([leaving.pid] * 3 + [helper.pid] * 3)
    assert len(helper.find("task.completed", step="hold")) == 3
    assert not helper.find("task.failed")
