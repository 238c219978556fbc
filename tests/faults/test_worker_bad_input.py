"""RELIABILITY B2 (worker side): garbage and orphan messages put straight
into a flow's queue while a worker runs.

Unknown run, JSON that is no object (array, string, number, null), objects
with missing or mistyped keys, a duplicate for a completed task, a step the
flow does not have: none of them may be redelivered again and again (each
is read at most once, then it is in the archive), the worker keeps running
and real work behind the garbage still completes once. The "unknown
handler" half of B2 is test_security_imports.py::test_b2_s4_...
"""

from __future__ import annotations

import uuid

import pytest

from tests.acceptance.harness import Database, Ledger, wait_until
from tests.faults.support import queue_rows, send_raw
from tests.support.worker_fixtures import Spawn

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]


def test_b2_garbage_messages_are_archived_after_one_read_and_the_worker_goes_on(
        db: Database, ledger: Ledger, spawn: Spawn) -> None:
    worker = spawn("noop", name="worker")
    done = db.start_run("noop", {})
    assert db.wait_runs([done], timeout=10, workers=[worker]) == {"completed": 1}
    [before] = db.tasks([done])

    garbage: list[object] = [
        {"run_id": str(uuid.uuid4()), "step_slug": "tick", "task_index": 0},  # unknown run
        [1, 2, 3],
        "just a string",
        42,
        None,
        {},
        {"run_id": "not-a-uuid", "step_slug": "tick", "task_index": 0},
        {"run_id": str(done), "step_slug": "tick", "task_index": "0"},
        {"run_id": str(done), "step_slug": "tick", "task_index": -1},
        {"run_id": str(done), "step_slug": "tick", "task_index": 2**40},
        {"run_id": str(done), "step_slug": "tick", "task_index": 0},  # duplicate, completed task
        {"run_id": str(done), "step_slug": "no_such_step", "task_index": 0},
        {"run_id": str(done), "step_slug": None, "task_index": None},
        {"run_id": str(done), "step_slug": "tick", "task_index": 0, "extra": {"x": [1] * 100}},
    ]
    msg_ids = send_raw(db, "noop", garbage)
    behind = db.start_runs("noop", [{}] * 5)  # real work queued behind the garbage

    def all_archived() -> bool:
        return (not queue_rows(db, "noop", msg_ids)
                and len(queue_rows(db, "noop", msg_ids, archive=True)) == len(msg_ids))

    wait_until(all_archived, timeout=10, message=lambda: (
        f"every garbage message in the archive; still queued: {queue_rows(db, 'noop', msg_ids)}"
        "\n" + worker.tail()))
    read_counts = queue_rows(db, "noop", msg_ids, archive=True)
    assert max(read_counts.values()) <= 1, f"garbage was redelivered: {read_counts}"

    assert db.wait_runs(behind, timeout=10, workers=[worker]) == {"completed": 5}
    assert ledger.executions_per_task(behind) == {(r, "tick", 0): 1 for r in behind}
    [after] = db.tasks([done])
    assert after == before, "a duplicate message changed a completed task"
    assert ledger.count(run_ids=[done]) == 1, "a duplicate message ran a completed task again"
    assert worker.alive(), worker.tail()
    assert not worker.find("worker.crashed")

