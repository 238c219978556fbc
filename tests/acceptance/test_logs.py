"""What a worker logs, read as a newcomer reads it (issue 21): one
worker.started per flow, task.failed with one outcome field, no abandoned
threads after a clean drain, unknown variables warned about."""

from __future__ import annotations

import uuid

import pytest

from tests.acceptance.harness import Database
from tests.support.worker_fixtures import Spawn

pytestmark = pytest.mark.acceptance


def test_worker_started_pairs_each_flow_with_its_worker_id(db: Database, spawn: Spawn) -> None:
    worker = spawn("diamond", "flaky")
    started = worker.find("worker.started")
    assert sorted(event["flow"] for event in started) == ["diamond", "flaky"]
    rows = db.query("SELECT flow_slug, worker_id::text FROM flowworker.workers WHERE pid = %s",
                    (worker.pid,))
    assert {(event["flow"], event["worker_id"]) for event in started} == set(rows)
    assert all(str(uuid.UUID(event["worker_id"])) == event["worker_id"] for event in started)


def test_task_failed_carries_one_outcome_the_metric_label(db: Database, spawn: Spawn) -> None:
    worker = spawn("flaky")
    run_ids = db.start_runs("flaky", [{}] * 3)  # each fails once, then completes
    assert db.wait_runs(run_ids, timeout=30, workers=[worker]) == {"completed": 3}
    worker.wait_for_event("task.failed", count=3)
    failures = worker.find("task.failed")
    assert [event["outcome"] for event in failures] == ["retry"] * 3
    assert not [event for event in failures if "result" in event], failures


def test_a_clean_drain_abandons_no_threads(db: Database, spawn: Spawn) -> None:
    # diamond's `right` and `summarize` are plain def handlers: they run in
    # pool threads, which are idle (and told to stop) when the drain ends.
    run_ids = db.start_runs("diamond", [{"n": n} for n in range(60)])
    drainer = spawn("diamond", args=["--drain", "--concurrency", "20"], wait_ready=False)
    assert drainer.wait_exit(timeout=60) == 0, drainer.tail()
    assert db.run_statuses(run_ids) == {"completed": 60}
    assert drainer.find("task.started", step="right"), "no plain def handler ran"
    assert not drainer.find("worker.abandoned_threads"), drainer.tail()


def test_unknown_variables_are_one_warning_each_and_change_nothing(
        db: Database, spawn: Spawn) -> None:
    worker = spawn("ping", args=["--drain"], wait_ready=False,
                   env={"FLOWWORKER_CONCURENCY": "3", "FLOWWORKER_TEST_ANYTHING": "1"})
    assert worker.wait_exit(timeout=30) == 0, worker.tail()
    warnings = worker.find("settings.unknown_variable")
    assert [(w["level"], w["warning"]) for w in warnings] == [(
        "warning", "FLOWWORKER_CONCURENCY is not a flowworker setting and is ignored; "
        "did you mean FLOWWORKER_CONCURRENCY?")]
