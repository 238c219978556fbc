"""Issue acceptance #3 (SIGTERM, then a second signal) and #10 (--drain)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.acceptance.harness import Database, Ledger, WorkerProcess, wait_until
from tests.apps.flows import diamond_expected
from tests.support.worker_fixtures import Spawn

pytestmark = pytest.mark.acceptance

GATED_VT = 20 + 5  # `gated`: task timeout + claim_grace


def assert_stopped_cleanly(db: Database, worker: WorkerProcess) -> None:
    rows = db.query("SELECT stopped_at IS NOT NULL FROM flowworker.workers WHERE pid = %s",
                    (worker.pid,))
    assert rows, f"no flowworker.workers row for pid {worker.pid}"
    assert all(stopped for (stopped,) in rows), "flowworker.workers.stopped_at not set"
    assert worker.find("worker.stopped"), "no worker.stopped event"


def test_sigterm_finishes_in_flight_tasks_and_hands_back_the_rest(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    shutdown_timeout = 15.0
    leaving = spawn("gated", name="leaving", args=[
        "--concurrency", "4", "--batch-size", "10", "--shutdown-timeout", str(shutdown_timeout)])
    in_flight = db.start_runs("gated", [{"gate": str(gate)}] * 4)
    wait_until(lambda: ledger.count(run_ids=in_flight, step="hold") == 4, timeout=10,
               message="4 hold tasks running in the leaving worker")
    # The leaving worker has no free slot: these wait, queued or claimed but unstarted.
    waiting = db.start_runs("gated", [{}] * 12)

    signalled = leaving.terminate()
    leaving.wait_for_event("worker.draining", timeout=5)
    helper = spawn("gated", name="helper", args=["--concurrency", "20"])
    assert db.wait_runs(waiting, timeout=5, workers=[leaving, helper]) == {"completed": 12}, (
        "work the leaving worker had not started must be redelivered at once, not after vt")
    assert time.time() - signalled < GATED_VT / 2
    assert leaving.alive(), "the leaving worker must wait for its running handlers"

    gate.touch()
    code = leaving.wait_exit(timeout=shutdown_timeout + 5)
    exited = time.time()
    assert code == 0, leaving.tail()
    assert exited - signalled <= shutdown_timeout + 1
    assert db.wait_runs(in_flight, timeout=15, workers=[helper]) == {"completed": 4}

    # The in-flight handlers finished and their outcomes were recorded by the leaving worker.
    for task in db.tasks(in_flight, step="hold"):
        assert (task.status, task.attempts_count) == ("completed", 1), task
        assert task.output == {"pid": leaving.pid, "attempt": 1}
    assert len(leaving.find("task.completed", step="hold")) == 4
    # Nothing was claimed by the leaving worker after the signal.
    late = [r for r in ledger.rows() if r.pid == leaving.pid and r.at.timestamp() > signalled]
    assert not late, f"the leaving worker started tasks after SIGTERM: {late}"
    assert {r.pid for r in ledger.rows(run_ids=waiting)} == {helper.pid}
    assert_stopped_cleanly(db, leaving)


def test_sigterm_hands_back_claimed_but_unstarted_tasks_at_once(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    """One thread for plain `def` handlers and four slots: the worker claims
    four `gated_sync` tasks but can start only one; the other three are
    claimed and not started, and SIGTERM must hand them back at once."""
    gate = tmp_path / "gate"
    leaving = spawn("gated_sync", name="leaving", env={"FLOWWORKER_SYNC_THREADS": "1"},
                    args=["--concurrency", "4", "--shutdown-timeout", "15"])
    running = db.start_run("gated_sync", {"gate": str(gate)})
    wait_until(lambda: ledger.count(run_ids=[running]) == 1, timeout=10,
               message="the gated task running")
    behind = db.start_runs("gated_sync", [{}] * 3)

    def claimed_not_started() -> bool:
        tasks = db.tasks(behind, step="hold")
        return all(t.status == "started" for t in tasks) and ledger.count(run_ids=behind) == 0

    # The precondition: the worker claims up to --concurrency, not up to its threads.
    wait_until(claimed_not_started, timeout=3, message=lambda: (
        "the worker to claim the 3 tasks behind its one busy thread without starting them"
        f" (this test needs that to mean anything): {db.tasks(behind, step='hold')}"))

    signalled = leaving.terminate()
    leaving.wait_for_event("worker.draining", timeout=5)
    helper = spawn("gated_sync", name="helper")
    assert db.wait_runs(behind, timeout=5, workers=[leaving, helper]) == {"completed": 3}, (
        "claimed but unstarted tasks must be handed back at once, not after vt")
    assert time.time() - signalled < GATED_VT / 2
    for task in db.tasks(behind, step="hold"):
        assert (task.status, task.attempts_count) == ("completed", 1), (
            f"handing back must not count an attempt: {task}")
    assert {r.pid for r in ledger.rows(run_ids=behind)} == {helper.pid}

    gate.touch()
    assert leaving.wait_exit(timeout=15) == 0, leaving.tail()
    assert db.wait_runs([running], timeout=10, workers=[helper]) == {"completed": 1}
    [hold] = db.tasks([running], step="hold")
    assert hold.output == {"pid": leaving.pid, "attempt": 1}
    assert_stopped_cleanly(db, leaving)


@pytest.mark.parametrize("hurry", ["second-signal", "shutdown-timeout"])
@pytest.mark.parametrize("flow", ["gated", "gated_sync"])
def test_overrunning_handlers_are_handed_back_on_a_second_signal_or_the_timeout(
        flow: str, hurry: str, db: Database, ledger: Ledger, spawn: Spawn,
        tmp_path: Path) -> None:
    """Handlers still running when the wait ends (a second signal, or
    --shutdown-timeout) are handed back, not failed, and the process exits.
    `gated` blocks in `async def` (cancellable); `gated_sync` in a plain
    `def`, which a thread pool cannot cancel: the process must exit anyway."""
    gate = tmp_path / "gate"
    shutdown_timeout = 30.0 if hurry == "second-signal" else 2.0
    stubborn = spawn(flow, name="stubborn", args=["--shutdown-timeout", str(shutdown_timeout)])
    run_ids = db.start_runs(flow, [{"gate": str(gate)}] * 3)
    wait_until(lambda: ledger.count(run_ids=run_ids, step="hold") == 3, timeout=10,
               message="3 hold tasks running")

    first = stubborn.terminate()
    stubborn.wait_for_event("worker.draining", timeout=5)
    if hurry == "second-signal":
        second = stubborn.send_signal(signal.SIGINT)
        code = stubborn.wait_exit(timeout=5)
        took = time.time() - second
        assert took < 2.5, f"exited {took:.2f} s after the second signal"
    else:
        code = stubborn.wait_exit(timeout=shutdown_timeout + 5)
        took = time.time() - first
        assert shutdown_timeout - 0.2 <= took <= shutdown_timeout + 2, (
            f"exited {took:.2f} s after SIGTERM with --shutdown-timeout {shutdown_timeout}")
    assert code == 0, stubborn.tail()

    for task in db.tasks(run_ids, step="hold"):
        assert (task.status, task.attempts_count) == ("queued", 0), (
            f"a task still running when the wait ended must be handed back, attempt not "
            f"counted: "
            f"{task}")
    assert len(stubborn.find("task.released")) == 3
    assert not stubborn.find("task.failed"), "handing back is not a failure"
    # Only handler threads count: the three blocked in `gated_sync`.
    abandoned = [event["count"] for event in stubborn.find("worker.abandoned_threads")]
    assert abandoned == ([3] if flow == "gated_sync" else []), stubborn.tail()
    assert_stopped_cleanly(db, stubborn)

    gate.touch()
    successor = spawn(flow, name="successor")
    assert db.wait_runs(run_ids, timeout=10, workers=[successor]) == {"completed": 3}
    for task in db.tasks(run_ids, step="hold"):
        assert (task.status, task.attempts_count) == ("completed", 1), task
        assert task.output == {"pid": successor.pid, "attempt": 1}
    holds = ledger.rows(run_ids=run_ids, step="hold")
    assert sorted((r.pid, r.attempt) for r in holds) == sorted(
        [(stubborn.pid, 1)] * 3 + [(successor.pid, 1)] * 3)


def test_drain_exits_0_once_all_runs_are_done(db: Database, spawn: Spawn) -> None:
    diamonds = db.start_runs("diamond", [{"n": n} for n in range(40)])
    flaky = db.start_runs("flaky", [{}] * 5)  # fail once, retried at once (base_delay 0)
    # The database URL comes from FLOWWORKER_DATABASE_URL only.
    drainer = spawn("diamond", "flaky", args=["--drain"], wait_ready=False,
                    pass_database_url=False)
    code = drainer.wait_exit(timeout=60)
    assert code == 0, drainer.tail()
    assert db.run_statuses(diamonds + flaky) == {"completed": 45}, (
        "--drain exited before every run was done")
    outputs = db.run_outputs(diamonds)
    assert all(outputs[run_id] == diamond_expected(n) for n, run_id in enumerate(diamonds))
    assert_stopped_cleanly(db, drainer)


def test_drain_with_nothing_to_do_exits_0(db: Database, spawn: Spawn) -> None:
    drainer = spawn("diamond", args=["--drain"], wait_ready=False)
    assert drainer.wait_exit(timeout=15) == 0, drainer.tail()
