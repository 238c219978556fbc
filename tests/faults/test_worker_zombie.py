"""RELIABILITY F4: a zombie worker (SIGSTOP) holds tasks past their
visibility timeout, another worker re-claims and completes them, then the
zombie wakes (SIGCONT) and reports.

tests/acceptance/test_crashes.py covers one single-step task and its late
*completion*. Here the zombie holds six tasks of a map step and reports
late completions for three and late *failures* for the other three (a late
`fail_task` must be rejected as well: no retry scheduled, no attempt
spent, no error recorded, the run not failed), while the run is still in
progress (a second root step holds it open), so the zombie's outcomes
really reach the database instead of being discarded with a finished run.
The downstream step starts once, and the run's output is the rescuer's.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.acceptance.harness import Database, Event, Ledger, WorkerProcess, wait_until
from tests.support.worker_fixtures import Spawn

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]

PARTS = 6


def expire_claims(db: Database, run_id: uuid.UUID) -> int:
    """Move the run's claims' visibility timeouts into the past: what waiting
    for them would do, without waiting (`zombie` has a 20 s task timeout)."""
    rows = db.query(
        "UPDATE flowworker.q_zombie SET vt = now() - interval '1 second' WHERE msg_id IN"
        " (SELECT message_id FROM flowworker.step_tasks WHERE run_id = %s"
        "  AND status = 'started') RETURNING msg_id", (run_id,))
    return len(rows)


def rejected(worker: WorkerProcess, run_id: uuid.UUID) -> list[Event]:
    return (worker.find("task.stale", run_id=run_id)
            + worker.find("task.failed", run_id=run_id, outcome="stale"))


def test_f4_zombie_late_completions_and_failures_are_rejected(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    parts_gate, keep_gate = tmp_path / "parts", tmp_path / "keep"
    zombie = spawn("zombie", name="zombie")
    elements = [{"gate": str(parts_gate), "hold": str(keep_gate), "fail": i % 2 == 1}
                for i in range(PARTS)]
    run_id = db.start_run("zombie", elements)
    wait_until(lambda: ledger.count(run_ids=[run_id]) == PARTS + 1, timeout=10,
               message=lambda: "every part and `keep` running in the zombie\n" + zombie.tail())
    zombie.freeze()
    assert expire_claims(db, run_id) == PARTS + 1

    rescuer = spawn("zombie", name="rescuer")
    wait_until(lambda: ledger.count(run_ids=[run_id]) == 2 * (PARTS + 1), timeout=15,
               message=lambda: "the rescuer to re-claim everything\n" + rescuer.tail())
    parts_gate.touch()
    rescuer.wait_for_event("task.completed", run_id=run_id, step="parts", count=PARTS,
                           timeout=10)

    zombie.thaw()
    wait_until(lambda: len(rejected(zombie, run_id)) == PARTS, timeout=15, message=lambda: (
        f"the zombie's {PARTS} late outcomes to be rejected; got {rejected(zombie, run_id)}\n"
        + zombie.tail()))
    # Late completions (even indexes) and late failures (odd) alike.
    late = rejected(zombie, run_id)
    assert sorted(int(e["task_index"]) for e in late) == list(range(PARTS))
    assert {str(e["attempt"]) for e in late} == {"1"}
    assert not zombie.find("task.completed", run_id=run_id, step="parts")
    assert not zombie.find("task.failed", run_id=run_id, outcome="retry")

    # Nothing the zombie said changed the tasks: no retry, no extra attempt.
    for task in db.tasks([run_id], step="parts"):
        assert (task.status, task.attempts_count) == ("completed", 2), task
        assert "late failure" not in (task.error_message or ""), task
    assert db.run_statuses([run_id]) == {"started": 1}, "a late failure touched the run"

    keep_gate.touch()
    assert db.wait_runs([run_id], timeout=15, workers=[rescuer, zombie]) == {"completed": 1}
    output = db.run_outputs([run_id])[run_id]["join"]
    assert output["parts"] == [{"pid": rescuer.pid, "attempt": 2, "index": i}
                               for i in range(PARTS)]
    assert output["keep"] == {"pid": rescuer.pid, "attempt": 2}
    joins = ledger.rows(run_ids=[run_id], step="join")
    assert len(joins) == 1, f"the downstream step ran {len(joins)} times"
    [join] = db.tasks([run_id], step="join")
    assert (join.status, join.attempts_count) == ("completed", 1), join
    parts = ledger.rows(run_ids=[run_id], step="parts")
    assert sorted((r.pid, r.attempt) for r in parts) == sorted(
        [(zombie.pid, 1)] * PARTS + [(rescuer.pid, 2)] * PARTS)
    assert zombie.alive()
    assert rescuer.alive()


def test_f4_zombie_outcomes_are_rejected_while_the_rescuer_still_holds_the_claim(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    """The sharper race: the zombie wakes while the rescuer's claim (attempt 2)
    is still running, so the task is `started` when the late outcomes land.
    Only the claim token (attempt and holder) can refuse them."""
    parts_gate, rescue_gate, keep_gate = (tmp_path / "parts", tmp_path / "rescue",
                                          tmp_path / "keep")
    zombie = spawn("zombie", name="zombie")
    elements = [{"gate": str(parts_gate), "rescue_gate": str(rescue_gate),
                 "hold": str(keep_gate), "fail": i % 2 == 1} for i in range(PARTS)]
    run_id = db.start_run("zombie", elements)
    wait_until(lambda: ledger.count(run_ids=[run_id]) == PARTS + 1, timeout=10,
               message=lambda: "every part and `keep` running in the zombie\n" + zombie.tail())
    zombie.freeze()
    assert expire_claims(db, run_id) == PARTS + 1
    rescuer = spawn("zombie", name="rescuer")
    wait_until(lambda: ledger.count(run_ids=[run_id]) == 2 * (PARTS + 1), timeout=15,
               message=lambda: "the rescuer to re-claim everything\n" + rescuer.tail())

    parts_gate.touch()  # only attempt 1 waits on this gate: the zombie's handlers finish
    zombie.thaw()
    wait_until(lambda: len(rejected(zombie, run_id)) == PARTS, timeout=15, message=lambda: (
        f"the zombie's {PARTS} late outcomes to be rejected; got {rejected(zombie, run_id)}\n"
        + zombie.tail()))
    for task in db.tasks([run_id], step="parts"):
        assert (task.status, task.attempts_count) == ("started", 2), task
        assert "late failure" not in (task.error_message or ""), task

    rescue_gate.touch()
    keep_gate.touch()
    assert db.wait_runs([run_id], timeout=20, workers=[rescuer, zombie]) == {"completed": 1}
    output = db.run_outputs([run_id])[run_id]["join"]
    assert output["parts"] == [{"pid": rescuer.pid, "attempt": 2, "index": i}
                               for i in range(PARTS)]
    assert len(ledger.rows(run_ids=[run_id], step="join")) == 1
