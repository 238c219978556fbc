"""RELIABILITY R7: kill -9 of a worker while it runs tasks of a run that is
paused, then resumed.

A `halt` run of 8 map tasks; the victim (concurrency 4) runs 4 of them,
held on a gate, and 4 are queued. The run is paused, the victim killed.
While paused nothing of the run is claimed, though another worker is up.
After resume_run the 4 queued tasks are claimed at once, and the 4 lost
claims after what was left of them when the run was paused (their
paused_delay), not before: resume keeps each delay. Every task completes
exactly once (one applied completion each, invariants I1-I7), the run's
output is whole, and its history reads paused, resumed, completed.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from flowworker.client import pause_run, resume_run
from tests.acceptance.harness import Database, Ledger, wait_until
from tests.faults.support import claims, install_claim_log
from tests.support.worker_fixtures import Spawn

pytestmark = pytest.mark.usefixtures("invariants")

PARTS, HELD = 8, 4
# halt's timeout (5 s) + claim grace (1 s): how long a claim stays hidden.
GRACE = {"FLOWWORKER_CLAIM_GRACE": "1"}
CLAIM_SPAN = 5 + 1


def test_r7_kill9_while_a_run_is_paused_every_task_completes_once_after_resume(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    install_claim_log(db)
    victim = spawn("halt", name="victim", args=["--concurrency", str(HELD)], env=GRACE)
    run_id = db.start_run("halt", [{"gate": str(gate), "i": i} for i in range(PARTS)])
    wait_until(lambda: ledger.count(run_ids=[run_id]) == HELD, timeout=10,
               message=lambda: f"{HELD} parts running in the victim\n" + victim.tail())

    assert pause_run(db.conn, run_id).status == "paused"
    paused_at = db.now()
    victim.kill()
    gate.touch()
    delays = {t: d for t, d in db.query(
        "SELECT task_index, paused_delay FROM flowworker.step_tasks WHERE run_id = %s",
        (run_id,))}
    assert None not in delays.values(), f"a task of the paused run was not parked: {delays}"
    held = sorted(t for t, d in delays.items() if d > timedelta(0))
    assert len(held) == HELD, delays
    assert all(timedelta(seconds=CLAIM_SPAN - 2) < delays[t] <= timedelta(seconds=CLAIM_SPAN)
               for t in held), delays

    rescuer = spawn("halt", name="rescuer", args=["--concurrency", str(PARTS)], env=GRACE)
    with pytest.raises(AssertionError, match="timed out"):
        wait_until(lambda: claims(db, run_ids=[run_id], after=paused_at.timestamp()),
                   timeout=2.0, message="no claim of the paused run")
    resumed_at = db.now()
    assert resume_run(db.conn, run_id).status == "started"
    began = time.monotonic()
    assert db.wait_runs([run_id], timeout=CLAIM_SPAN + 15,
                        workers=[rescuer, victim]) == {"completed": 1}
    took = time.monotonic() - began

    assert db.run_outputs([run_id])[run_id] == {"total": sum(range(PARTS))}
    again = claims(db, run_ids=[run_id], after=paused_at.timestamp())
    assert min(c.at for c in again) >= resumed_at, "claimed while paused"
    parts = {c.task_index: c for c in again if c.step_slug == "part"}
    assert sorted(parts) == list(range(PARTS))
    for index, c in parts.items():
        waited = (c.at - resumed_at).total_seconds()
        if index in held:  # the lost claims come back after the rest of their span
            assert c.attempt == 2, c
            assert waited >= delays[index].total_seconds() - 0.3, (index, waited, delays)
        else:
            assert c.attempt == 1, c
            assert waited < 1.0, (index, waited)
    for task in db.tasks([run_id]):
        assert task.status == "completed", task
    runs = ledger.executions_per_task([run_id])
    assert {t: runs[(run_id, "part", t)] for t in range(PARTS)} == {
        t: 2 if t in held else 1 for t in range(PARTS)}
    assert runs[(run_id, "total", 0)] == 1
    assert [e for (e,) in db.query("SELECT event FROM flowworker.events WHERE run_id = %s "
                                   "ORDER BY event_id", (run_id,))] == [
        "run.started", "run.paused", "run.resumed", "run.completed"]
    print(f"\nR7: {HELD} claims lost with the victim came back "  # noqa: T201
          f"{min((parts[t].at - resumed_at).total_seconds() for t in held):.2f}-"
          f"{max((parts[t].at - resumed_at).total_seconds() for t in held):.2f} s after resume "
          f"(paused_delay {min(delays[t] for t in held).total_seconds():.2f}-"
          f"{max(delays[t] for t in held).total_seconds():.2f} s); the run completed "
          f"{took:.1f} s after resume")
