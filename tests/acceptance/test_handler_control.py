"""Handler control on a real worker (issue "The first hour"): a handler that
raises Fail fails its run at once; RetryAfter retries after the delay it
asked for; an exception the step does not retry fails at once; an input
that does not fit the handler's declared type fails before the handler
runs; each run's end is one INFO event."""

from __future__ import annotations

import pytest

from tests.acceptance.harness import Database, Ledger
from tests.support.worker_fixtures import Spawn

pytestmark = pytest.mark.acceptance


def test_fail_retry_after_retry_on_and_typed_inputs(db: Database, ledger: Ledger,
                                                      spawn: Spawn) -> None:
    worker = spawn("checkout", env={"FLOWWORKER_LOG_LEVEL": "INFO"})
    declined, limited, broken, typo, fine = db.start_runs("checkout", [
        {"amount": 5, "card": "declined"}, {"amount": 6, "card": "limited"},
        {"amount": 7, "card": "broken"}, {"amount": "seven"}, {"amount": 8, "card": "ok"}])
    runs = [declined, limited, broken, typo, fine]
    assert db.wait_runs(runs, timeout=30, workers=[worker]) == {"failed": 3, "completed": 2}

    errors = dict(db.query("SELECT run_id, error_message FROM flowworker.runs "
                           "WHERE status = 'failed'"))
    assert errors[declined] == "step pay failed: attempt 1 of 3: Fail: card declined"
    assert errors[broken].startswith("step pay failed: attempt 1 of 3: KeyError:")
    assert errors[typo].startswith("step pay failed: attempt 1 of 3: invalid input for Charge: ")
    assert "amount: Input should be a valid integer" in errors[typo]
    assert "card: Field required" in errors[typo]
    attempts = {t.run_id: t.attempts_count for t in db.tasks(runs)}
    assert attempts == {declined: 1, limited: 2, broken: 1, typo: 1, fine: 1}
    assert ledger.count(run_ids=[typo]) == 0, "the handler ran on an input of the wrong type"

    # RetryAfter(2): the second attempt started 2 s after the first failed, not after 1 s.
    first, second = ledger.rows(run_ids=[limited])
    assert (second.at - first.at).total_seconds() >= 2.0
    [task] = db.tasks([limited])
    assert (task.status, task.error_message) == ("completed", None)

    # One INFO event per run that ended, naming the failing step.
    ended = {e["run_id"]: e for e in worker.find(where=lambda e: e["event"] in (
        "run.completed", "run.failed"))}
    assert {e["event"] for e in ended.values()} == {"run.completed", "run.failed"}
    assert ended[str(declined)]["event"] == "run.failed"
    assert ended[str(declined)]["step"] == "pay"
    assert ended[str(fine)]["event"] == "run.completed"
    assert ended[str(fine)]["duration_ms"] >= 0
    assert len(worker.find("run.failed")) == 3
    assert len(worker.find("run.completed")) == 2
    [fail_event] = worker.find("task.failed", run_id=str(declined))
    assert fail_event["outcome"] == "fail"
