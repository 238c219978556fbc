"""Issue 18 "Must show": runs that stop and go, with real worker processes.

- a run fails, the fix is deployed (the file that keeps the bug in place is
  removed), retry_run completes it; the ledger proves that what completed
  before never ran again and what did not ran exactly once more;
- a flow paused for 10 s while 200 runs start: nothing claimed (claim log),
  then resumed: every run completes, each task once;
- a webhook-style wait completed by its token from another connection; the
  step after it starts within the NOTIFY latency (the fallback poll is slowed
  to >= 5 s);
- an approval gate: rejected fails the run with the note, approved goes on;
- a run paused while its handlers run: they finish and are recorded (not
  cancelled); the next step waits for resume_run;
- wait_for_run (sync and async) returns the finished run, and while it waits
  it reads the run about once per POLL_EVERY, not in a busy loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flowworker.client import (
    Run,
    get_run,
    get_run_async,
    pause_flow,
    pause_run,
    resume_flow,
    resume_run,
    retry_run,
    signal,
    signal_token,
    wait_for_run,
    wait_for_run_async,
)
from flowworker.client import reading as client_reading
from flowworker.daemon.maintenance import RUN_WATCH_INTERVAL
from flowworker.errors import InvalidInputError
from tests.acceptance.harness import (
    Database,
    Ledger,
    WorkerProcess,
    percentile,
    task_key,
    wait_until,
)
from tests.faults.support import claims, install_claim_log
from tests.support.worker_fixtures import Spawn

pytestmark = pytest.mark.acceptance

# The fallback poll slowed far past the bound: only NOTIFY can start a step sooner.
SLOW_POLL = ["--poll-min-interval", "5", "--poll-max-interval", "10"]
NOTIFY_BOUND = 1.0  # seconds from the signal's commit to the next step's handler


def report(text: str) -> None:
    """What the test measured, shown with pytest -s."""
    print(text)  # noqa: T201


def stays_false(condition: Callable[[], object], seconds: float) -> None:
    """Fail as soon as condition() is truthy during the next `seconds`: a
    check that something does NOT happen over a span of time."""
    with pytest.raises(AssertionError, match="timed out"):
        wait_until(condition, timeout=seconds, interval=0.05, message="nothing to happen")


def step_state(db: Database, run_id: uuid.UUID, step: str) -> tuple[Any, ...]:
    rows = db.query("SELECT status, wait_token, output FROM flowworker.step_states"
                    " WHERE run_id = %s AND step_slug = %s", (run_id, step))
    return rows[0] if rows else ()


def events(db: Database, run_id: uuid.UUID) -> list[tuple[Any, ...]]:
    return db.query("SELECT event, step_slug, attempt, detail, actor FROM flowworker.events"
                    " WHERE run_id = %s ORDER BY event_id", (run_id,))


# ---------------------------------------------------------------- retry_run

SETTLED = ("task.completed", "task.failed", "task.discarded", "task.stale", "task.released")


def unsettled(worker: WorkerProcess, run_id: uuid.UUID) -> list[tuple[str, str, int]]:
    """The claims of the run the worker started and has not written an outcome for."""
    ended = {(task_key(e), str(e["attempt"])) for e in worker.find(
        run_id=run_id, where=lambda e: e.get("event") in SETTLED)}
    return [task_key(e) for e in worker.find("task.started", run_id=run_id)
            if (task_key(e), str(e["attempt"])) not in ended]


def test_a_failed_run_is_retried_after_the_fix_and_completed_steps_never_run_again(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.touch()  # the bug is deployed: one element of `pack` fails
    worker = spawn("repair")
    run_id = db.start_run("repair", {"n": 1, "broken": str(broken)})
    assert db.wait_runs([run_id], timeout=20, workers=[worker]) == {"failed": 1}
    failed = get_run(db.conn, run_id)
    assert failed is not None
    assert failed.error_message == (
        "step pack failed: attempt 2 of 2: RuntimeError: the packing station is down"), failed
    # Deploying takes a while: the worker has settled what it held of the run.
    wait_until(lambda: not unsettled(worker, run_id), timeout=10,
               message=lambda: f"the worker to settle {unsettled(worker, run_id)}\n"
               + worker.tail())
    before = ledger.executions_per_task([run_id])
    tasks_before = {(t.step_slug, t.task_index): t for t in db.tasks([run_id])}
    status_before = {key: t.status for key, t in tasks_before.items()}
    done_before = {key for key, status in status_before.items() if status == "completed"}
    assert status_before[("pack", 1)] == "failed"
    assert before[(run_id, "pack", 1)] == 2, "both attempts of the broken element ran"
    assert {("fetch", 0), ("pack", 0), ("pack", 2)} <= done_before, status_before

    broken.unlink()  # the fix is deployed
    retried = retry_run(db.conn, run_id)
    assert (retried.status, retried.error_message) == ("started", None)
    done = wait_for_run(db.conn, run_id, timeout=20)
    assert done.status == "completed", done
    assert done.output == {"ship": {"packed": [10, 20, 30], "charged": 6}}

    after = ledger.executions_per_task([run_id])
    for task in db.tasks([run_id]):
        key = (run_id, task.step_slug, task.task_index)
        assert task.status == "completed", task
        if (task.step_slug, task.task_index) in done_before:
            assert after[key] == before[key] == 1, f"{key} ran again after the retry"
        else:
            assert after[key] == before[key] + 1, f"{key}: {before[key]} -> {after[key]}"
            # The first of its fresh attempts, numbered on from the last one.
            earlier = tasks_before.get((task.step_slug, task.task_index))
            assert task.attempts_count == (earlier.attempts_count if earlier else 0) + 1, task
    assert after[(run_id, "ship", 0)] == 1
    history = [e[0] for e in events(db, run_id)]
    assert history.count("task.failed") >= 2, history
    assert history.index("run.failed") < history.index("run.retried") < history.index(
        "run.completed") == len(history) - 1, history
    report(f"\nretry: before the fix {sum(before.values())} executions "
           f"({len(done_before)} tasks completed); after the retry "
           f"{sum(after.values()) - sum(before.values())} more, none of a completed task")


# ---------------------------------------------------------------- pause_flow

def test_a_flow_paused_for_10_s_while_200_runs_start_completes_them_all_after_resume(
        db: Database, ledger: Ledger, spawn: Spawn) -> None:
    install_claim_log(db)
    workers = [spawn("parcel", args=["--concurrency", "20"]) for _ in range(2)]
    pause_flow(db.conn, "parcel")
    run_ids = db.start_runs("parcel", [{"n": n} for n in range(200)])
    # The workers were notified of 200 runs; for 10 s they claim none of them.
    stays_false(lambda: claims(db, run_ids=run_ids), 10.0)
    assert ledger.count(run_ids=run_ids) == 0
    assert db.run_statuses(run_ids) == {"started": 200}

    resume_called = db.now()
    resume_flow(db.conn, "parcel")
    began = time.monotonic()
    assert db.wait_runs(run_ids, timeout=60, workers=workers) == {"completed": 200}
    drained = time.monotonic() - began
    logged = claims(db, run_ids=run_ids)
    assert len(logged) == 400
    assert min(c.at for c in logged) >= resume_called
    assert set(ledger.executions_per_task(run_ids).values()) == {1}
    assert len(ledger.rows(run_ids=run_ids)) == 400
    outputs = db.run_outputs(run_ids)
    assert all(outputs[r] == {"post": 2 * n} for n, r in enumerate(run_ids))
    first = min(c.at for c in logged)
    report(f"\npause_flow: 0 claims in 10 s of pause; after resume, first claim "
           f"{(first - resume_called).total_seconds() * 1000:.0f} ms after the call, "
           f"200 runs (400 tasks) completed in {drained:.1f} s")


# ---------------------------------------------------------------- waits

def waiting(db: Database, run_id: uuid.UUID, step: str) -> uuid.UUID:
    """Wait until the run's wait step waits; its wait_token."""
    row = wait_until(lambda: (s := step_state(db, run_id, step)) and s[0] == "waiting" and s,
                     timeout=10, message=f"step {step} of run {run_id} to wait")
    token: uuid.UUID = row[1]
    return token


def test_a_webhook_wait_completes_by_token_and_the_next_step_starts_at_once(
        db: Database, ledger: Ledger, spawn: Spawn, db_url: str) -> None:
    worker = spawn("webhook", args=SLOW_POLL)
    latencies = []
    for order in range(10):
        run_id = db.start_run("webhook", {"order": order})
        token = waiting(db, run_id, "paid")
        assert ledger.count(run_ids=[run_id], step="ship") == 0
        # The payment provider calls the web app, which has only the token.
        with psycopg.connect(db_url) as web, web.transaction():
            assert signal_token(web, token, {"payment_id": f"pi_{order}"}) == "signalled"
        committed = time.time()
        [ship] = wait_until(partial(ledger.rows, run_ids=[run_id], step="ship"), timeout=15,
                            interval=0.005, message=lambda: "ship to start\n" + worker.tail())
        latencies.append(ship.at.timestamp() - committed)
        with psycopg.connect(db_url, autocommit=True) as web:
            assert signal_token(web, token, {"payment_id": "again"}) == "already"
        done = wait_for_run(db.conn, run_id, timeout=10)
        assert done.output == {"ship": {"shipped": {"payment_id": f"pi_{order}"}}}
        assert [e[:2] for e in events(db, run_id)] == [
            ("run.started", None), ("step.waiting", "paid"), ("step.signalled", "paid"),
            ("run.completed", None)]
    assert len(ledger.rows(step="ship")) == 10
    report(f"\nwebhook: signal_token commit -> next step's handler: p50 "
           f"{percentile(latencies, 0.5) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
           f"(fallback poll >= 5 s)")
    assert max(latencies) < NOTIFY_BOUND


def test_an_approval_gate_rejected_fails_the_run_with_the_note_and_approved_goes_on(
        db: Database, ledger: Ledger, spawn: Spawn) -> None:
    worker = spawn("approval", args=SLOW_POLL)
    rejected, approved = db.start_runs("approval", [{"title": "spam"}, {"title": "news"}])
    for run_id in (rejected, approved):
        waiting(db, run_id, "review")
    with pytest.raises(InvalidInputError, match="must be one of approve, reject, not 'maybe'"):
        signal(db.conn, approved, "review", {"option": "maybe"})

    note = "links to a phishing site"
    assert signal(db.conn, rejected, "review",
                  {"option": "reject", "note": note, "actor": "alice"}) == "signalled"
    run = wait_for_run(db.conn, rejected, timeout=10)
    assert (run.status, run.error_message) == ("failed", f"step review failed: reject: {note}")
    decision = {"option": "approve", "note": "fine", "actor": "bob"}
    assert signal(db.conn, approved, "review", decision) == "signalled"
    run = wait_for_run(db.conn, approved, timeout=10)
    assert run.status == "completed", (run, worker.tail())
    assert run.output == {"publish": {"published": "news", "decision": decision}}

    assert ledger.count(run_ids=[rejected], step="publish") == 0
    assert ledger.count(run_ids=[approved], step="publish") == 1
    assert step_state(db, rejected, "review")[0] == "failed"
    assert step_state(db, rejected, "publish")[0] == "cancelled"
    signalled = [e for e in events(db, rejected) + events(db, approved)
                 if e[0] == "step.signalled"]
    assert [(e[3], e[4]) for e in signalled] == [({"option": "reject"}, "alice"),
                                                 ({"option": "approve"}, "bob")]


# ---------------------------------------------------------------- pause_run

def test_handlers_of_a_run_paused_meanwhile_finish_and_the_next_step_waits_for_resume(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    worker = spawn("gated", args=SLOW_POLL)
    paused, other = db.start_runs("gated", [{"gate": str(gate)}] * 2)
    wait_until(lambda: ledger.count(run_ids=[paused, other], step="hold") == 2, timeout=10,
               message=lambda: "both hold handlers running\n" + worker.tail())
    assert pause_run(db.conn, paused).status == "paused"
    # The worker checks its runs every RUN_WATCH_INTERVAL: give it a few looks.
    stays_false(lambda: worker.find("task.discarded"), 4 * RUN_WATCH_INTERVAL)
    gate.touch()

    worker.wait_for_event("task.completed", run_id=paused, step="hold", timeout=10)
    assert db.wait_runs([other], timeout=10, workers=[worker]) == {"completed": 1}
    [hold] = db.tasks([paused], step="hold")
    assert (hold.status, hold.attempts_count) == ("completed", 1)
    # The step it made ready has no task, so no message a claim could find.
    assert step_state(db, paused, "after")[0] == "created"
    assert db.tasks([paused], step="after") == []
    assert db.run_statuses([paused]) == {"paused": 1}
    assert not worker.find("task.discarded")
    assert not worker.find("task.stale")

    assert resume_run(db.conn, paused).status == "started"
    done = wait_for_run(db.conn, paused, timeout=10)
    assert done.output == {"after": {"hold": {"pid": worker.pid, "attempt": 1},
                                     "pid": worker.pid}}
    assert ledger.executions_per_task([paused]) == {
        (paused, "hold", 0): 1, (paused, "after", 0): 1}
    assert [e[0] for e in events(db, paused)] == [
        "run.started", "run.paused", "run.resumed", "run.completed"]


# ---------------------------------------------------------------- wait_for_run

class Counted:
    """Counts the reads wait_for_run makes (it reads the run through get_run)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        monkeypatch.setattr(client_reading, "get_run", self.sync)
        monkeypatch.setattr(client_reading, "get_run_async", self.async_)

    def sync(self, conn: psycopg.Connection[Any], run_id: uuid.UUID | str) -> Run | None:
        self.calls += 1
        return get_run(conn, run_id)

    async def async_(self, conn: psycopg.AsyncConnection[Any],
                     run_id: uuid.UUID | str) -> Run | None:
        self.calls += 1
        return await get_run_async(conn, run_id)


def test_wait_for_run_returns_the_finished_run_without_busy_polling(
        db: Database, spawn: Spawn, db_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate = tmp_path / "gate"
    spawn("gated", args=SLOW_POLL)
    sync_run, async_run = db.start_runs("gated", [{"gate": str(gate)}] * 2)
    reads = Counted(monkeypatch)
    with psycopg.connect(db_url, autocommit=True) as conn, \
            pytest.raises(TimeoutError, match="is still started after 3"):
        wait_for_run(conn, sync_run, timeout=3)
    sync_reads, reads.calls = reads.calls, 0

    async def wait_async(seconds: float) -> Run:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await wait_for_run_async(conn, async_run, timeout=seconds)

    with pytest.raises(TimeoutError):
        asyncio.run(wait_async(3))
    async_reads, reads.calls = reads.calls, 0
    # 1 read, then one per POLL_EVERY (1 s) when nothing is notified.
    assert 3 <= sync_reads <= 5, sync_reads
    assert 3 <= async_reads <= 5, async_reads

    # The run ends: the notification wakes the waiters long before a poll would.
    monkeypatch.setattr(client_reading, "POLL_EVERY", 30.0)
    returned: dict[str, tuple[Run, float]] = {}

    def sync_waiter() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            returned["sync"] = (wait_for_run(conn, sync_run, timeout=20), time.time())

    def async_waiter() -> None:
        returned["async"] = (asyncio.run(wait_async(20)), time.time())

    threads = [threading.Thread(target=sync_waiter), threading.Thread(target=async_waiter)]
    for thread in threads:
        thread.start()
    wait_until(lambda: reads.calls >= 2, timeout=10, message="both waiters to read once")
    gate.touch()
    for thread in threads:
        thread.join(timeout=30)
    assert set(returned) == {"sync", "async"}
    lags = {}
    for kind, run_id in (("sync", sync_run), ("async", async_run)):
        run, at = returned[kind]
        assert (run.run_id, run.status) == (run_id, "completed"), kind
        assert run.completed_at is not None
        lags[kind] = at - run.completed_at.timestamp()
        assert lags[kind] < NOTIFY_BOUND, f"{kind}: returned {lags[kind]:.2f} s after the end"
    # Each waiter read on its start and then once per notification: two runs of
    # the flow ended, at most once each (the two may end in one transaction).
    assert reads.calls <= 6, reads.calls
    report(f"\nwait_for_run: over 3 s of waiting, {sync_reads} reads (sync) and {async_reads} "
           f"(async) at POLL_EVERY=1 s; with POLL_EVERY=30 s they returned "
           f"{lags['sync'] * 1000:.0f} ms (sync) and {lags['async'] * 1000:.0f} ms (async) "
           f"after the run completed, {reads.calls} reads in all")
