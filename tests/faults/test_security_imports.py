"""RELIABILITY S4 (worker side) and the "unknown handler" half of B2.

Nothing a database string names is ever imported or looked up outside the
app's registry. Two ways a database string reaches a worker:

- a queue message (anyone with INSERT on the queue, or a bug): its step is
  `os.system`, `subprocess.call`, `tests.apps.side_effect` (a module that
  leaves a file behind when imported), ... The message points at no task,
  so it is archived unread; nothing is imported.
- a step the database definition has and the running code does not: the
  flow gains steps `stray` and `system` (through the public `add_step`,
  allowed while the flow has no runs) after a worker checked the flow's
  shape and started, as in a rolling deploy where `migrate` runs before the
  old workers are replaced. The app module does define top-level functions
  `stray` and `system` that look like handlers (and leave a marker file when
  called), but they are no steps: the task must fail with "no handler
  registered for ...", attempt after attempt, and the run fail.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.acceptance.harness import Database, Ledger, wait_until
from tests.apps.faults import STRAY_MARKER_ENV
from tests.faults.support import queue_rows, send_raw
from tests.support.worker_fixtures import Spawn

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]


def test_s4_messages_naming_python_callables_import_nothing_and_are_archived(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    side_effect = tmp_path / "side_effect_imported"
    stray_marker = tmp_path / "stray_ran"
    worker = spawn("s4", name="worker", env={
        "FLOWWORKER_TEST_SIDE_EFFECT": str(side_effect), STRAY_MARKER_ENV: str(stray_marker)})
    run_id = db.start_run("s4", {})
    assert db.wait_runs([run_id], timeout=10, workers=[worker]) == {"completed": 1}

    steps = ["os.system", "subprocess.call", "tests.apps.side_effect", "__import__",
             "builtins.eval", "stray", "system", "tests.apps.faults.stray"]
    messages: list[object] = []
    for step in steps:
        messages.append({"run_id": str(run_id), "step_slug": step, "task_index": 0,
                         "input": f"touch {side_effect}"})
        messages.append({"run_id": str(uuid.uuid4()), "step_slug": step, "task_index": 0})
    msg_ids = send_raw(db, "s4", messages)

    wait_until(lambda: len(queue_rows(db, "s4", msg_ids, archive=True)) == len(msg_ids),
               timeout=10, message=lambda: "the messages archived\n" + worker.tail())
    assert not queue_rows(db, "s4", msg_ids)
    assert max(queue_rows(db, "s4", msg_ids, archive=True).values()) <= 1

    following = db.start_run("s4", {})  # the worker is still fine
    assert db.wait_runs([following], timeout=10, workers=[worker]) == {"completed": 1}
    assert not side_effect.exists(), "a module named by a database string was imported"
    assert not stray_marker.exists(), "a function named by a database string was called"
    assert {row.step_slug for row in ledger.rows()} == {"probe"}
    assert worker.alive(), worker.tail()


def test_b2_s4_a_step_without_a_handler_fails_no_handler_registered(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    stray_marker = tmp_path / "stray_ran"
    worker = spawn("s4", name="worker", env={STRAY_MARKER_ENV: str(stray_marker)})
    # The deploy: the database learns two steps the running code lacks.
    db.execute("SELECT flowworker.add_step('s4', 'stray')")
    db.execute("SELECT flowworker.add_step('s4', 'system')")

    run_id = db.start_run("s4", {})
    assert db.wait_runs([run_id], timeout=20, workers=[worker]) == {"failed": 1}
    tasks = {t.step_slug: t for t in db.tasks([run_id])}
    for step in ("stray", "system"):
        task = tasks[step]
        expected = f"no handler registered for step {step!r} of flow 's4'"
        assert (task.error_message or "").endswith(f" of 2: {expected}"), task
        # Whichever of the two used up its attempts first failed the run;
        # the other was failed (two attempts) or cancelled by then.
        assert task.status in ("failed", "cancelled"), task
        assert task.attempts_count <= 2, task
    assert any(tasks[s].status == "failed" and tasks[s].attempts_count == 2
               for s in ("stray", "system")), tasks
    run_error = db.scalar("SELECT error_message FROM flowworker.runs WHERE run_id = %s",
                          (run_id,))
    assert "no handler registered for step" in (run_error or ""), run_error
    failures = worker.find("task.failed", run_id=run_id)
    assert failures, "the worker logged no failed attempt"
    assert {e.get("step") for e in failures} <= {"stray", "system"}, failures
    assert not stray_marker.exists(), "the app's top-level `stray`/`system` ran as a handler"
    assert {row.step_slug for row in ledger.rows(run_ids=[run_id])} <= {"probe"}
    assert worker.alive(), worker.tail()

