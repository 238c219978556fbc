"""Issue acceptance #1: many runs of a diamond flow with a map step, two workers."""

from __future__ import annotations

import pytest

from tests.acceptance.harness import Database, Ledger
from tests.apps.flows import diamond_expected
from tests.support.worker_fixtures import Spawn

pytestmark = pytest.mark.acceptance

RUNS = 500


def test_500_diamond_runs_on_two_workers_complete_once_each(
        db: Database, ledger: Ledger, spawn: Spawn) -> None:
    first = spawn("diamond", name="first", wait_ready=False)
    second = spawn("diamond", name="second", wait_ready=False)
    for worker in (first, second):
        worker.wait_for_event("worker.ready")

    run_ids = db.start_runs("diamond", [{"n": n} for n in range(RUNS)])
    counts = db.wait_runs(run_ids, timeout=90, workers=[first, second])
    assert counts == {"completed": RUNS}

    outputs = db.run_outputs(run_ids)
    wrong = [(n, outputs[run_id]) for n, run_id in enumerate(run_ids)
             if outputs[run_id] != diamond_expected(n)]
    assert not wrong, f"{len(wrong)} runs with a wrong output, e.g. {wrong[:3]}"

    tasks = db.tasks(run_ids)
    assert len(tasks) == sum(5 + n % 3 for n in range(RUNS))  # 5 single steps + the map tasks
    not_done = [t for t in tasks if t.status != "completed" or t.attempts_count != 1]
    assert not not_done, f"{len(not_done)} tasks not completed on attempt 1: {not_done[:3]}"

    executions = ledger.executions_per_task(run_ids)
    assert set(executions) == {(t.run_id, t.step_slug, t.task_index) for t in tasks}
    repeated = {task: n for task, n in executions.items() if n != 1}
    assert not repeated, f"{len(repeated)} tasks executed more than once: {list(repeated)[:3]}"

    pids = {row.pid for row in ledger.rows(run_ids=run_ids)}
    assert pids == {first.pid, second.pid}, "both workers should have taken part"
    logged = len(first.find("task.completed")) + len(second.find("task.completed"))
    assert logged == len(tasks), "one task.completed event per task over both workers"
    assert first.alive()
    assert second.alive()


def test_worker_with_several_flows_gets_ready(spawn: Spawn, db: Database) -> None:
    """worker.ready comes after LISTEN and the first poll of every flow,
    also when there is no work at all."""
    spawn("diamond", "ping", "flaky", name="multi", ready_timeout=15)


def test_one_worker_runs_several_flows_each_on_its_own(
        db: Database, ledger: Ledger, spawn: Spawn) -> None:
    """Work for only one of the worker's flows at a time, starting from idle:
    every flow's producer must be claiming, whichever has work. (Does not
    wait for worker.ready: that is the test above.)"""
    worker = spawn("diamond", "ping", "flaky", name="multi", wait_ready=False)
    worker.wait_for_event("listener.connected", timeout=30)
    work: list[tuple[str, list[dict[str, int]]]] = [
        ("ping", [{}] * 5), ("flaky", [{}] * 3),
        ("diamond", [{"n": n} for n in range(10)]), ("ping", [{}] * 5)]
    for flow, inputs in work:
        runs = db.start_runs(flow, inputs)
        assert db.wait_runs(runs, timeout=10, workers=[worker]) == {"completed": len(runs)}, flow
        assert {row.pid for row in ledger.rows(run_ids=runs)} == {worker.pid}
