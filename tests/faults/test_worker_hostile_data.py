"""RELIABILITY B4, B5 and D12 on a real worker: what data and other
transactions do to `flowworker run`.

- B4: a run whose input Python's JSON decoder refuses (planted straight into
  the table, as data from before schema version 2 could be) fails its own
  attempts, never the worker and never the tasks claimed beside it; a claim
  the database refuses is tried again after a while and never ends the worker.
- B5: a root map over a large input: each task gets its element, and the
  flow input once per run, whole, through `ctx.flow_input`.
- D12: an application transaction holding one run's row does not hold up
  the outcomes of every other run; the held run's outcome is written once
  the lock goes.
"""

from __future__ import annotations

import time

import pytest

from tests.acceptance.harness import Database, Ledger, wait_until
from tests.faults.support import run_row_locked
from tests.support.worker_fixtures import Spawn

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]


def test_b4_an_input_python_cannot_decode_fails_its_own_task_only(
        db: Database, ledger: Ledger, spawn: Spawn) -> None:
    innocent = db.start_runs("noop", [{}] * 100)
    [hostile] = db.start_runs("noop", [{"n": 1}])
    # 5,001 digits as text: over Python's int limit (ValueError in json.loads).
    db.execute("UPDATE flowworker.runs SET input = '{\"n\": 1e5000}'::jsonb "
               "WHERE run_id = %s", (hostile,))
    worker = spawn("noop")
    assert db.wait_runs(innocent, timeout=30, workers=[worker]) == {"completed": 100}
    assert db.wait_runs([hostile], timeout=30, workers=[worker]) == {"failed": 1}

    [task] = db.tasks([hostile])
    assert task.attempts_count == 3
    error = db.scalar("SELECT error_message FROM flowworker.runs WHERE run_id = %s", (hostile,))
    assert "the task's input cannot be decoded" in error, error
    assert "4300 digits" in error, error
    assert ledger.count(run_ids=[hostile]) == 0, "the handler ran on an undecodable input"
    # The tasks claimed beside it spent no attempt on its account.
    assert {t.attempts_count for t in db.tasks(innocent)} == {1}
    assert ledger.executions_per_task(innocent) == {(r, "tick", 0): 1 for r in innocent}
    assert worker.alive(), worker.tail()


def test_b4_a_claim_the_database_refuses_is_retried_and_never_ends_the_worker(
        db: Database, spawn: Spawn) -> None:
    runs = db.start_runs("noop", [{}] * 10)
    # A claim moves each message's visibility timeout; make the database refuse that.
    db.execute("CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN RAISE EXCEPTION 'claims refused for this test'; END $$")
    db.execute("CREATE TRIGGER refuse BEFORE UPDATE ON flowworker.q_noop "
               "FOR EACH ROW EXECUTE FUNCTION public.refuse()")
    worker = spawn("noop", wait_ready=False)  # ready once a claim goes through
    worker.wait_for_event("claim.failed", count=3, timeout=30, flow="noop",
                          sqlstate="P0001")
    assert worker.alive(), worker.tail()
    assert db.run_statuses(runs) == {"started": 10}
    db.execute("DROP TRIGGER refuse ON flowworker.q_noop")
    # The backoff is capped at 30 s (CLAIM_FAILED_BACKOFF_CAP); after three
    # failures the next try comes within a few seconds.
    assert db.wait_runs(runs, timeout=40, workers=[worker]) == {"completed": 10}
    assert {t.attempts_count for t in db.tasks(runs)} == {1}, "a refused claim spent attempts"
    assert not worker.find("worker.crashed")


def test_b5_a_root_map_over_a_large_input_gets_it_once_per_run(
        db: Database, ledger: Ledger, spawn: Spawn) -> None:
    elements = [{"i": i, "pad": "p" * 30} for i in range(2000)]
    [run_id] = db.start_runs("sized", [elements])
    stored = db.scalar("SELECT pg_column_size(input) FROM flowworker.runs")
    assert stored > 8192, "the input must be one that is left for the worker to fetch"
    worker = spawn("sized", args=["--concurrency", "50", "--batch-size", "25"])
    assert db.wait_runs([run_id], timeout=60, workers=[worker]) == {"completed": 1}
    # Each handler saw its element, and the whole flow input (its length in the output).
    output = db.scalar("SELECT output FROM flowworker.runs WHERE run_id = %s", (run_id,))
    assert output == {"measure": [i * 10_000 + len(elements) for i in range(2000)]}
    assert len(ledger.executions_per_task([run_id])) == 2000


def test_d12_a_run_held_by_an_application_does_not_stall_the_others(
        db: Database, ledger: Ledger, spawn: Spawn, db_url: str) -> None:
    [held] = db.start_runs("noop", [{}])
    # An application's transaction took the run's row (as cancel_run would)
    # and went on with slow work; meanwhile the run's handler runs and ends.
    with run_row_locked(db_url, held):
        worker = spawn("noop")
        wait_until(lambda: ledger.count(run_ids=[held]) == 1, timeout=10,
                   message="the held run's handler to run")
        began = time.monotonic()
        others = db.start_runs("noop", [{}] * 160)
        assert db.wait_runs(others, timeout=30, workers=[worker]) == {"completed": 160}
        took = time.monotonic() - began
        assert db.run_statuses([held]) == {"started": 1}
        assert worker.find("task.ack_deferred", run_id=str(held))
    print(f"D12: 160 other runs completed in {took:.2f} s while one run was held")  # noqa: T201
    assert db.wait_runs([held], timeout=10, workers=[worker]) == {"completed": 1}
    assert ledger.executions_per_task([held]) == {(held, "tick", 0): 1}
    [task] = db.tasks([held])
    assert task.attempts_count == 1
    assert worker.alive(), worker.tail()


def test_d12_a_held_run_does_not_hold_up_a_shutdown(
        db: Database, spawn: Spawn, db_url: str) -> None:
    """SIGTERM while an outcome waits on a held run: the worker still exits
    within the drain timeout; the claim expires and is redelivered."""
    [held] = db.start_runs("noop", [{}])
    with run_row_locked(db_url, held):
        worker = spawn("noop", args=["--shutdown-timeout", "2"])
        worker.wait_for_event("task.ack_deferred", run_id=str(held), timeout=10)
        sent = worker.terminate()
        assert worker.wait_exit(timeout=10) == 0
        waited = time.time() - sent
        assert waited < 2 + 3, f"exit took {waited:.1f} s with a held run"
    assert worker.find("task.unwritten", run_id=str(held))
    wait_until(lambda: db.run_statuses([held]) == {"started": 1}, timeout=5,
               message="the held run still going, its claim to expire")
