"""Issue acceptance #2 (kill -9 with tasks in flight) and #5 (a zombie worker).

`gated*` flows: `hold` blocks while the gate file named in the flow input is
missing; `after` depends on it. `gated_kill` has a 3 s task timeout, so a
claim stays hidden for 3 + 5 (claim_grace) = 8 s.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.acceptance.harness import Database, Event, Ledger, WorkerProcess, wait_until
from tests.support.worker_fixtures import Spawn

pytestmark = pytest.mark.acceptance

IN_FLIGHT = 20
KILL_VT = 3 + 5  # gated_kill: task timeout + claim_grace


def test_kill9_with_tasks_in_flight_they_complete_elsewhere_after_vt(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    victim = spawn("gated_kill", name="victim", args=["--concurrency", "25"])
    run_ids = db.start_runs("gated_kill", [{"gate": str(gate)}] * IN_FLIGHT)
    wait_until(lambda: ledger.count(run_ids=run_ids, step="hold") == IN_FLIGHT, timeout=10,
               message="every hold task running in the victim")
    victim.kill()
    first = {row.run_id: row for row in ledger.rows(run_ids=run_ids, step="hold")}
    assert {(row.pid, row.attempt) for row in first.values()} == {(victim.pid, 1)}
    assert not victim.find("task.completed"), "the victim had to die holding its tasks"
    assert not victim.find("task.failed"), "the victim had to die holding its tasks"
    gate.touch()  # the redelivered attempts run straight through

    survivor = spawn("gated_kill", name="survivor", args=["--concurrency", "25"])
    counts = db.wait_runs(run_ids, timeout=KILL_VT + 15, workers=[survivor])
    assert counts == {"completed": IN_FLIGHT}

    for task in db.tasks(run_ids):
        assert task.status == "completed"
        assert task.attempts_count == (2 if task.step_slug == "hold" else 1), task
    for run_id, output in db.run_outputs(run_ids).items():
        assert output == {"after": {"hold": {"pid": survivor.pid, "attempt": 2},
                                    "pid": survivor.pid}}, run_id

    hold_runs = ledger.rows(run_ids=run_ids, step="hold")
    assert len(hold_runs) == 2 * IN_FLIGHT
    for row in hold_runs:
        if row.pid == victim.pid:
            continue
        assert (row.pid, row.attempt) == (survivor.pid, 2)
        waited = (row.at - first[row.run_id].at).total_seconds()
        assert waited >= KILL_VT - 0.5, f"re-claimed {waited:.2f} s after the claim, before vt"
        assert waited <= KILL_VT + 5, f"re-claimed {waited:.2f} s after the claim (vt + 5 s)"
    assert ledger.count(run_ids=run_ids, step="after") == IN_FLIGHT

    completed_holds = survivor.find("task.completed", step="hold")
    assert sorted(task_run(e) for e in completed_holds) == sorted(run_ids)
    assert {e.get("attempt") for e in completed_holds} == {2}


def task_run(event: Event) -> uuid.UUID:
    return uuid.UUID(str(event["run_id"]))


def expire_claim(db: Database, flow: str, run_id: uuid.UUID, step: str) -> None:
    """Move a claim's visibility timeout into the past: what waiting for it
    would do, without waiting (the test's stand-in for the passage of time)."""
    db.execute(
        f"UPDATE flowworker.q_{flow} SET vt = now() - interval '1 second' WHERE msg_id ="
        " (SELECT message_id FROM flowworker.step_tasks WHERE run_id = %s AND step_slug = %s)",
        (run_id, step))


@pytest.mark.parametrize(("flow", "expire"), [
    pytest.param("gated", True, id="late-completion"),
    pytest.param("gated_kill", False, id="real-vt"),
])
def test_zombie_worker_late_outcome_is_rejected(
        flow: str, expire: bool, db: Database, ledger: Ledger, spawn: Spawn,
        tmp_path: Path) -> None:
    """late-completion: `gated` has a 20 s timeout and the test expires the
    claim by hand, so the zombie's handler finishes inside its timeout and
    sends a real late `complete_task`. real-vt: `gated_kill` (vt 8 s) and the
    test waits for the real vt; on waking the zombie finds its handler both
    finished and past its timeout, so its late outcome may be either."""
    gate = tmp_path / "gate"
    zombie = spawn(flow, name="zombie")
    run_id = db.start_run(flow, {"gate": str(gate)})
    wait_until(lambda: ledger.count(run_ids=[run_id], step="hold") == 1, timeout=10,
               message="hold running in the zombie")
    zombie.freeze()
    if expire:
        expire_claim(db, flow, run_id, "hold")
    rescuer = spawn(flow, name="rescuer")
    gate.touch()
    assert db.wait_runs([run_id], timeout=KILL_VT + 15, workers=[rescuer]) == {"completed": 1}
    expected = {"after": {"hold": {"pid": rescuer.pid, "attempt": 2}, "pid": rescuer.pid}}
    assert db.run_outputs([run_id])[run_id] == expected

    zombie.thaw()
    rejected = wait_for_rejected_outcome(zombie, run_id, completion_only=expire)
    assert str(rejected.get("attempt")) == "1", rejected

    assert db.run_outputs([run_id])[run_id] == expected, "the zombie changed the output"
    tasks = {t.step_slug: t for t in db.tasks([run_id])}
    assert (tasks["hold"].status, tasks["hold"].attempts_count) == ("completed", 2)
    assert (tasks["after"].status, tasks["after"].attempts_count) == ("completed", 1)
    holds = ledger.rows(run_ids=[run_id], step="hold")
    assert [(r.pid, r.attempt) for r in holds] == [(zombie.pid, 1), (rescuer.pid, 2)]
    afters = ledger.rows(run_ids=[run_id], step="after")
    assert [(r.pid, r.attempt) for r in afters] == [(rescuer.pid, 1)], "after started once"
    assert zombie.alive(), "the zombie should carry on after a rejected outcome"


def wait_for_rejected_outcome(worker: WorkerProcess, run_id: uuid.UUID, *,
                              completion_only: bool) -> Event:
    """The zombie's late outcome for `hold`, rejected by the database:
    `task.stale`, or (unless completion_only) `task.failed` with outcome `stale`."""

    def rejected() -> Event | None:
        found = worker.find("task.stale", run_id=run_id, step="hold")
        if not completion_only:
            found += worker.find("task.failed", run_id=run_id, step="hold", outcome="stale")
        return found[0] if found else None

    what = "task.stale" if completion_only else "task.stale or task.failed(outcome=stale)"
    return wait_until(rejected, timeout=15,
                      message=lambda: f"the zombie to log {what}\n" + worker.tail())
