"""A task whose worker was lost twice runs alone in its flow (the F7 poison
defence).

start_tasks hands such a task out alone, but the worker claiming it may
already hold other tasks of its flow, claimed in earlier rounds. Those must
finish, and their outcomes be written, before the suspect starts, or a poison
takes them down with it and each loses an attempt (the F7 flake: a normal
task died with all three of the poison's workers). Other flows of the worker
go on meanwhile: only the suspect's flow waits.

Here the suspect is a `suspect` task lost twice by hand (two claims by a
worker id that never ran it), and beside it another `suspect` task held on a
gate. The suspect's claim must be renewed while it waits, nothing more of its
flow may be claimed meanwhile (but another flow's runs are), and a worker
stopped while it waits hands it back without spending its last attempt. A
third test holds the gated task's acknowledgement on a held run row
(deferred, then written once the row is free): the suspect must wait for
that write too.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from tests.acceptance.harness import Database, Ledger, WorkerProcess, wait_until
from tests.faults.support import run_row_locked
from tests.support.worker_fixtures import Spawn

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]

FLOW = "suspect"
GRACE = 1  # FLOWWORKER_CLAIM_GRACE: the suspect's claim hides for its 6 s timeout + 1 s


def lose_twice(db: Database, run_id: uuid.UUID) -> int:
    """Claim the run's task twice and let both claims expire, as if two
    workers died running it; then hide it until reveal(). Its msg_id."""
    vanished = uuid.uuid4()
    for attempt in (1, 2):
        [(msg_id, claimed_run, got)] = db.query(
            "SELECT msg_id, run_id, attempt FROM flowworker.start_tasks(%s, %s, 1, 1)",
            (FLOW, vanished))
        assert (claimed_run, got) == (run_id, attempt)
        db.execute("SELECT flowworker.queue_set_vt(%s, %s, 0)", (FLOW, [msg_id]))
    db.execute("SELECT flowworker.queue_set_vt(%s, %s, 3600)", (FLOW, [msg_id]))
    return int(msg_id)


def reveal(db: Database, msg_id: int) -> None:
    db.execute("SELECT flowworker.queue_set_vt(%s, %s, 0)", (FLOW, [msg_id]))


def hidden_until(db: Database, msg_id: int) -> float:
    return float(db.scalar(
        "SELECT extract(epoch FROM vt) FROM flowworker.q_suspect WHERE msg_id = %s", (msg_id,)))


def suspect_waiting_beside_a_gated_task(
        db: Database, ledger: Ledger, spawn: Spawn, gate: Path,
        env: dict[str, str]) -> tuple[WorkerProcess, uuid.UUID, uuid.UUID, int]:
    """A worker serving `suspect` and `drain`, running a gated `suspect`
    task, that has just claimed the twice-lost poison task."""
    suspect = db.start_run(FLOW, {"poison": True})
    msg_id = lose_twice(db, suspect)
    worker = spawn(FLOW, "drain", name="isolating", env={
        "FLOWWORKER_CLAIM_GRACE": str(GRACE), **env})
    beside = db.start_run(FLOW, {"gate": str(gate)})
    wait_until(lambda: ledger.count(run_ids=[beside]) == 1, timeout=15,
               message=lambda: "the gated task to start\n" + worker.tail())
    reveal(db, msg_id)
    worker.wait_for_event("task.isolated", run_id=str(suspect), timeout=15)
    return worker, suspect, beside, msg_id


def test_a_task_lost_twice_starts_only_after_its_flows_tasks_are_written(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    worker, suspect, beside, msg_id = suspect_waiting_beside_a_gated_task(
        db, ledger, spawn, gate, {})
    claimed_until = hidden_until(db, msg_id)
    later = db.start_run(FLOW, {})  # its flow: not claimed while the suspect waits or runs
    elsewhere = db.start_run("drain", {})  # another flow: goes on meanwhile

    assert db.wait_runs([elsewhere], timeout=10, workers=[worker]) == {"completed": 1}
    # Held past its first visibility timeout, the waiting claim is renewed.
    wait_until(lambda: hidden_until(db, msg_id) > claimed_until, timeout=15,
               message=lambda: "the waiting suspect's claim to be renewed\n" + worker.tail())
    assert not ledger.rows(run_ids=[suspect]), "the suspect ran beside the gated task"
    gate.touch()

    assert worker.wait_exit(timeout=20) == 1, "the poison should kill the worker once it runs"
    [done] = db.tasks([beside])
    assert (done.status, done.attempts_count) == ("completed", 1), (
        f"the task beside the poison died with it: {done}")
    [run] = ledger.rows(run_ids=[suspect])
    assert (run.attempt, run.pid) == (3, worker.pid)
    written_at = db.scalar("SELECT completed_at FROM flowworker.step_tasks WHERE run_id = %s",
                           (beside,))
    assert run.at > written_at, "the suspect started before the task beside it was written"
    [untouched] = db.tasks([later])
    assert (untouched.status, untouched.attempts_count) == ("queued", 0), (
        f"a task of the suspect's flow was claimed beside it: {untouched}")


def test_stopping_while_a_task_lost_twice_waits_hands_it_back_unspent(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    worker, suspect, beside, msg_id = suspect_waiting_beside_a_gated_task(
        db, ledger, spawn, tmp_path / "gate", {"FLOWWORKER_SHUTDOWN_TIMEOUT": "1"})
    worker.send_signal(signal.SIGTERM)

    assert worker.wait_exit(timeout=20) == 0, worker.tail()
    assert not ledger.rows(run_ids=[suspect])
    [waiting] = db.tasks([suspect])
    assert (waiting.status, waiting.attempts_count) == ("queued", 2), (
        f"stopping spent the suspect's last attempt: {waiting}")
    assert hidden_until(db, msg_id) <= db.now().timestamp(), "the suspect should be visible again"
    [gated] = db.tasks([beside])
    assert (gated.status, gated.attempts_count) == ("queued", 0), gated
    assert worker.find("task.released", run_id=str(suspect))


def test_a_task_lost_twice_waits_for_the_outcome_beside_it_to_be_written(
        db: Database, db_url: str, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    worker, suspect, beside, msg_id = suspect_waiting_beside_a_gated_task(
        db, ledger, spawn, gate, {})
    with run_row_locked(db_url, beside):
        gate.touch()
        # The ack finds the run held and defers the outcome (it does not wait on the lock).
        worker.wait_for_event("task.ack_deferred", run_id=str(beside), timeout=10)
        # A worker still waiting keeps renewing the claim; one that started the
        # poison renewed it once more at most, then died.
        seen = {hidden_until(db, msg_id)}

        def renewed_twice() -> bool:
            seen.add(hidden_until(db, msg_id))
            return len(seen) > 2

        wait_until(renewed_twice, timeout=15, message=lambda: (
            f"two renewals while the ack waits; worker alive: {worker.alive()}"))
        assert worker.alive(), worker.tail()
        assert not ledger.rows(run_ids=[suspect]), "the suspect ran before the ack was written"

    assert worker.wait_exit(timeout=20) == 1, "the poison should kill the worker once it runs"
    [done] = db.tasks([beside])
    assert (done.status, done.attempts_count) == ("completed", 1), done
    assert [r.attempt for r in ledger.rows(run_ids=[suspect])] == [3]
