"""Issue acceptance #4: a handler over its timeout is cancelled (async) or
abandoned (plain def), retried with backoff, and fails the run after
max_attempts with the timeout in step_tasks.error_message."""

from __future__ import annotations

import re

import pytest

from tests.acceptance.harness import Database, Ledger, wait_until
from tests.support.worker_fixtures import Spawn

pytestmark = pytest.mark.acceptance

TIMEOUT = 1.0       # timeout_async / timeout_sync: timeout=1, max_attempts=3, base_delay=1
BACKOFF = [1.0, 2.0]  # base_delay * 2^(n-1) after attempt n
POLL_MAX = 0.5
SYNC_OVERRUN = 2.5  # tests/apps/flows.py SYNC_OVERRUN_SECONDS
TIMEOUT_TEXT = re.compile(r"time[d ]?\s?out", re.IGNORECASE)


@pytest.mark.parametrize(("flow", "step"), [
    pytest.param("timeout_async", "sleepy", id="async"),
    pytest.param("timeout_sync", "sleepy_sync", id="sync"),
])
def test_handler_over_its_timeout_is_retried_then_fails_the_run(
        flow: str, step: str, db: Database, ledger: Ledger, spawn: Spawn) -> None:
    worker = spawn(flow, args=["--poll-max-interval", str(POLL_MAX)])
    run_id = db.start_run(flow, {})
    assert db.wait_runs([run_id], timeout=30, workers=[worker]) == {"failed": 1}

    [task] = db.tasks([run_id], step=step)
    assert (task.status, task.attempts_count, task.output) == ("failed", 3, None)
    assert re.search(TIMEOUT_TEXT, task.error_message or ""), (
        f"the timeout should be visible in step_tasks.error_message: {task.error_message!r}")
    run_error = db.scalar("SELECT error_message FROM flowworker.runs WHERE run_id = %s",
                          (run_id,))
    assert re.search(TIMEOUT_TEXT, run_error or ""), run_error

    starts = ledger.rows(run_ids=[run_id], step=step)
    assert [r.attempt for r in starts] == [1, 2, 3]
    assert {r.pid for r in starts} == {worker.pid}
    abandon_slack = 0.0 if flow == "timeout_async" else 1.0
    for previous, current, delay in zip(starts, starts[1:], BACKOFF, strict=False):
        gap = (current.at - previous.at).total_seconds()
        low = TIMEOUT + delay - 0.2
        high = TIMEOUT + abandon_slack + delay + POLL_MAX + 1.0
        assert low <= gap <= high, (
            f"attempt {current.attempt} started {gap:.2f} s after attempt {previous.attempt}; "
            f"expected timeout + backoff, within [{low:.1f}, {high:.1f}]")

    failures = worker.find("task.failed", run_id=run_id, step=step)
    assert [str(e.get("attempt")) for e in failures] == ["1", "2", "3"], failures
    outcomes = [e.get("outcome") for e in failures]
    assert set(outcomes) <= {"timeout", "exhausted"}, outcomes
    assert "timeout" in outcomes, outcomes
    for start, failure in zip(starts, failures, strict=True):
        failed_after = failure["_received"] - start.at.timestamp()
        assert failed_after <= TIMEOUT + 1.0 + 0.5, (
            f"attempt {start.attempt} failed {failed_after:.2f} s after it started")
        assert failed_after >= TIMEOUT - 0.2, f"attempt {start.attempt} failed early"

    if flow == "timeout_async":
        cancelled = ledger.rows(run_ids=[run_id], note="cancelled", executions=False)
        assert [r.attempt for r in cancelled] == [1, 2, 3], "the async handler was not cancelled"
        for start, cancel in zip(starts, cancelled, strict=True):
            took = (cancel.at - start.at).total_seconds()
            assert TIMEOUT - 0.2 <= took <= TIMEOUT + 1.0, f"cancelled after {took:.2f} s"
    else:
        # The abandoned threads did return later; their results were ignored.
        def late_results() -> int:
            return len(ledger.rows(run_ids=[run_id], note="returned", executions=False))

        wait_until(lambda: late_results() == 3, timeout=SYNC_OVERRUN + 2,
                   message="the three sync attempts to return")
        [task] = db.tasks([run_id], step=step)
        assert (task.status, task.output) == ("failed", None), "a late sync result was applied"
        assert not worker.find("task.completed", run_id=run_id)

    # The worker stays healthy: it takes the next run at once.
    assert worker.alive()
    following = db.start_run(flow, {})
    wait_until(lambda: ledger.count(run_ids=[following]) == 1, timeout=5,
               message="the worker to take a new run after the timeouts")
