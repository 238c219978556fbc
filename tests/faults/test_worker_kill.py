"""RELIABILITY F1 (kill -9 with 50 tasks in flight, a second worker running)
and F7 (a poison task that kills its worker, restarted by a loop).

tests/acceptance/test_crashes.py kills a worker holding 20 single-step runs
and starts the survivor afterwards. Here the 50 tasks are the elements of
one map step (their inputs are rebuilt at re-claim from the flow input),
the second worker is already running, idle, when the first dies, and the
pass criterion is the row's: every task completed exactly once within
vt + 5 s of the kill, orphaned tasks show attempts_count = 2, nothing is
left `started`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.acceptance.harness import Database, Ledger, WorkerProcess, wait_until
from tests.faults.support import claims, install_claim_log
from tests.support.worker_fixtures import Spawn

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]

IN_FLIGHT = 50


def test_f1_kill9_with_50_map_tasks_in_flight_second_worker_finishes_them_once(
        db: Database, ledger: Ledger, spawn: Spawn, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    grace = 2
    vt = 3 + grace  # `crash`: task timeout 3 s + claim grace
    env = {"FLOWWORKER_CLAIM_GRACE": str(grace)}
    victim = spawn("crash", name="victim", args=["--concurrency", "60"], env=env)
    elements = [{"gate": str(gate)} for _ in range(IN_FLIGHT)]
    run_id = db.start_run("crash", elements)
    wait_until(lambda: ledger.count(run_ids=[run_id], step="parts") == IN_FLIGHT, timeout=15,
               message=lambda: "50 parts running in the victim\n" + victim.tail())
    survivor = spawn("crash", name="survivor", args=["--concurrency", "60"], env=env)
    killed_at = time.time()
    victim.kill()
    assert not victim.find("task.completed", step="parts")
    gate.touch()  # re-claimed attempts run straight through

    assert db.wait_runs([run_id], timeout=vt + 15, workers=[survivor]) == {"completed": 1}
    parts = db.tasks([run_id], step="parts")
    assert len(parts) == IN_FLIGHT
    for task in parts:
        assert (task.status, task.attempts_count) == ("completed", 2), task
        assert task.output == {"pid": survivor.pid, "attempt": 2, "index": task.task_index}
    latest = db.scalar("SELECT max(completed_at) FROM flowworker.step_tasks"
                       " WHERE run_id = %s AND step_slug = 'parts'", (run_id,))
    took = latest.timestamp() - killed_at
    assert took <= vt + 5, f"the orphaned tasks completed {took:.1f} s after the kill (vt {vt} s)"
    assert db.scalar("SELECT count(*) FROM flowworker.step_tasks WHERE status = 'started'") == 0

    output = db.run_outputs([run_id])[run_id]
    assert [p["index"] for p in output["join"]["parts"]] == list(range(IN_FLIGHT))
    runs = ledger.rows(run_ids=[run_id], step="parts")
    assert sorted((r.pid, r.attempt) for r in runs) == sorted(
        [(victim.pid, 1)] * IN_FLIGHT + [(survivor.pid, 2)] * IN_FLIGHT)
    assert ledger.count(run_ids=[run_id], step="join") == 1
    completed = survivor.find("task.completed", step="parts")
    assert sorted(int(e["task_index"]) for e in completed) == list(range(IN_FLIGHT))
    assert survivor.alive()


# ---------------------------------------------------------------- F7

NORMAL = 100
POISON_MAX_ATTEMPTS = 3  # tests/apps/faults.py `poison`
POISON_VT = 2 + 1        # its timeout + FLOWWORKER_CLAIM_GRACE below


@pytest.mark.slow
def test_f7_poison_task_fails_after_max_attempts_and_100_normal_tasks_complete(
        db: Database, ledger: Ledger, spawn: Spawn) -> None:
    install_claim_log(db)
    inputs: list[dict[str, object]] = [{"sleep": 0.05} for _ in range(NORMAL)]
    inputs.insert(NORMAL // 2, {"poison": True})
    run_ids = db.start_runs("poison", inputs)
    poisoned = run_ids[NORMAL // 2]
    normal = [r for r in run_ids if r != poisoned]

    workers: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        return spawn("poison", name=f"poison-worker{len(workers) + 1}", wait_ready=False,
                     env={"FLOWWORKER_CLAIM_GRACE": "1"})

    workers.append(start())
    exit_codes: list[int] = []

    def restart_until_done() -> bool:
        """The restart loop: respawn the worker whenever it has exited."""
        if not workers[-1].alive():
            exit_codes.append(workers[-1].wait_exit(timeout=10))
            workers.append(start())
        counts = db.run_statuses(run_ids)
        return counts["started"] == 0

    wait_until(restart_until_done, timeout=90, interval=0.1, message=lambda: (
        f"every run to finish: {dict(db.run_statuses(run_ids))}, exits {exit_codes}\n"
        + workers[-1].tail()))

    assert exit_codes == [1] * POISON_MAX_ATTEMPTS, (
        f"the poison should kill exactly {POISON_MAX_ATTEMPTS} workers: exits {exit_codes}")
    [task] = db.tasks([poisoned])
    assert (task.status, task.attempts_count) == ("failed", POISON_MAX_ATTEMPTS), task
    assert "lost" in (task.error_message or ""), task
    poison_claims = claims(db, run_ids=[poisoned])
    assert [c.attempt for c in poison_claims] == [1, 2, 3], poison_claims
    poison_runs = ledger.rows(run_ids=[poisoned])
    assert [r.attempt for r in poison_runs] == [1, 2, 3]
    assert len({r.pid for r in poison_runs}) == 3, "each attempt should kill another worker"

    assert db.run_statuses([poisoned]) == {"failed": 1}
    victims = [t for t in db.tasks(normal) if t.status != "completed"]
    poison_claim_txids = {c.txid for c in poison_claims}
    shared = {t.run_id: sum(c.txid in poison_claim_txids for c in claims(db, run_ids=[t.run_id]))
              for t in victims}
    assert not victims, (
        f"{len(victims)} of the {NORMAL} normal tasks did not complete: they died with the "
        f"poison's workers, each time losing an attempt. How many of their claims were the "
        f"poison's own claim (same start_tasks call): {sorted(shared.values())}. E.g. "
        f"{victims[0]}")

    executions = ledger.executions_per_task(normal)
    assert set(executions) == {(r, "eat", 0) for r in normal}
    outputs = db.run_outputs(normal)
    assert all(outputs[r]["eat"]["attempt"] >= 1 for r in normal)
    assert workers[-1].alive(), workers[-1].tail()

