"""RELIABILITY R6: retry_run while a zombie worker of the old attempt still
answers. A worker holds the claim of `redo`'s `work` (attempt 1, code
version 1) and is frozen (SIGSTOP); the run is cancelled, the fix deployed
(version 2) and the run retried, so the task is claimed again. Then the zombie wakes (SIGCONT)
and its handler answers with version 1, while the new claim is still
running: the late answer must be refused, whoever holds the new claim.
Attempt numbers go on across a retry (the new claim is attempt 2), so the
two claims differ even when one worker holds both.

- another worker holds it: the claims differ by worker;
- the zombie itself re-claims it once it wakes (one worker process, as
  many deployments run; or cancel and retry within the worker's 0.5 s
  check for ended runs): the same worker holds both claims. Before attempt
  numbers went on across a retry, both were attempt 1 and the old handler's
  answer (code version 1) was applied as the new claim's.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from flowworker.client import cancel_run, retry_run
from tests.acceptance.harness import Database, Ledger, WorkerProcess, wait_until
from tests.support.worker_fixtures import Spawn

pytestmark = pytest.mark.usefixtures("invariants")


def stale(worker: WorkerProcess, run_id: uuid.UUID) -> list[dict[str, object]]:
    return worker.find("task.stale", run_id=run_id, step="work")


def start_frozen(db: Database, ledger: Ledger, spawn: Spawn,
                 tmp_path: Path) -> tuple[WorkerProcess, uuid.UUID, Path]:
    """A run whose `work` (version 1) runs in a worker that is then frozen,
    cancelled, fixed (version 2) and retried."""
    version = tmp_path / "version"
    version.write_text("1")
    zombie = spawn("redo", name="zombie")
    run_id = db.start_run("redo", {"version": str(version), "gates": str(tmp_path)})
    wait_until(lambda: ledger.count(run_ids=[run_id], step="work") == 1, timeout=10,
               message=lambda: "work running in the zombie\n" + zombie.tail())
    zombie.freeze()
    assert cancel_run(db.conn, run_id, "stuck on a bad deploy").status == "cancelled"
    version.write_text("2")  # the fix is deployed
    assert retry_run(db.conn, run_id).status == "started"
    return zombie, run_id, tmp_path


def finish(db: Database, ledger: Ledger, run_id: uuid.UUID, gates: Path,
           holder: WorkerProcess, zombie: WorkerProcess) -> None:
    """The zombie's late answer was refused; the new claim completes the run."""
    [work] = db.tasks([run_id], step="work")
    assert (work.status, work.attempts_count) == ("started", 2), work
    (gates / "open-2").touch()
    assert db.wait_runs([run_id], timeout=15, workers=[holder, zombie]) == {"completed": 1}
    output = db.run_outputs([run_id])[run_id]
    assert output == {"join": {"work": {"version": "2", "pid": holder.pid, "attempt": 2}}}
    assert ledger.count(run_ids=[run_id], step="join") == 1
    assert sorted((r.pid, r.attempt) for r in ledger.rows(run_ids=[run_id], step="work")) == \
        sorted([(zombie.pid, 1), (holder.pid, 2)])


def test_r6_a_zombie_answering_after_retry_while_another_worker_holds_the_task(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    zombie, run_id, gates = start_frozen(db, ledger, spawn, tmp_path)
    rescuer = spawn("redo", name="rescuer")
    wait_until(lambda: ledger.count(run_ids=[run_id], step="work") == 2, timeout=10,
               message=lambda: "the rescuer to claim work again\n" + rescuer.tail())

    (gates / "open-1").touch()  # the zombie's old handler can answer
    zombie.thaw()
    wait_until(lambda: stale(zombie, run_id), timeout=10,
               message=lambda: "the zombie's answer to be refused\n" + zombie.tail())
    assert not zombie.find("task.completed", run_id=run_id)
    finish(db, ledger, run_id, gates, rescuer, zombie)


def test_r6_a_zombie_that_claims_the_retried_task_itself_cannot_answer_for_the_new_claim(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    zombie, run_id, gates = start_frozen(db, ledger, spawn, tmp_path)
    zombie.thaw()
    wait_until(lambda: ledger.count(run_ids=[run_id], step="work") == 2, timeout=10,
               message=lambda: "the zombie to claim work again\n" + zombie.tail())

    (gates / "open-1").touch()  # the old handler (version 1) answers
    wait_until(lambda: stale(zombie, run_id) or zombie.find("task.completed", run_id=run_id),
               timeout=10, message=lambda: "the old handler's answer\n" + zombie.tail())
    assert stale(zombie, run_id), "the answer of the attempt before the retry was applied"
    finish(db, ledger, run_id, gates, zombie, zombie)
