# ruff: noqa: F811 - the acceptance fixtures are imported so that pytest finds them here
"""RELIABILITY D5: the connection is cut right after the worker sends its
acknowledgement (`flowworker.ack_tasks`, which calls complete_task).

The worker's connections go through the fault proxy (tests/faults/proxy.py),
which reads the wire protocol and acts on the first `Bind` of the ack
statement. Three cuts, each produced for certain, not by timing luck:

- `lost`: reset before the Bind leaves the proxy: the server never saw the
  ack (before commit, and before execution).
- `uncommitted`: the Bind and Execute reach the server, the proxy swaps the
  Sync for a Flush, so the server runs ack_tasks inside the still-open
  implicit transaction and sends its rows and CommandComplete, and the
  proxy resets the connection on that CommandComplete. No Sync ever reached
  the server, so it cannot have committed: it rolls back (before commit,
  after execution).
- `committed`: everything reaches the server; the proxy swallows the reply
  and resets the connection when ReadyForQuery (status idle: the implicit
  transaction committed) arrives. The completion is applied but the worker
  never hears so (after commit).

The worker's next ack attempt (on any connection) is then held at the
proxy while the test looks at the task: still `started` (before commit)
or already `completed` (after commit). Then it is let through.

Pass: the run completes with the right output; the task was completed once
(one applied completion, downstream steps executed once each); the worker
logged the reconnect and retried; and no error surfaced: no task.failed,
task.stale, task.ack_failed, task.unwritten or crash, no error-level line.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tests.acceptance.harness import Database, Ledger, as_url, wait_until
from tests.apps.flows import diamond_expected
from tests.faults.proxy import (  # noqa: F401 - fixture used by name
    Direction,
    Message,
    Proxy,
    ProxyConnection,
    Verdict,
    db_proxy,
)
from tests.support.worker_fixtures import (  # noqa: F401 - default_app used by name:
    Spawn,  # these workers run the acceptance app, not the faults conftest's
    default_app,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]

ACK_FUNCTION = "flowworker.ack_tasks"
CutMode = Literal["lost", "uncommitted", "committed"]
ERROR_EVENTS = ("task.failed", "task.stale", "task.ack_failed", "task.unwritten",
                "worker.crashed")


@dataclass
class AckCut:
    """A proxy rule: cut the first call of `function` as `mode` says, then
    hold the next one (the worker's retry) until the test calls proxy.restore()."""

    mode: CutMode
    function: str = ACK_FUNCTION
    cut: threading.Event = field(default_factory=threading.Event)
    retry_held: threading.Event = field(default_factory=threading.Event)
    command_tag: str | None = None  # the server's CommandComplete for the cut ack
    ready_status: str | None = None  # ReadyForQuery status byte: I means committed
    notes: list[str] = field(default_factory=list)

    def __call__(self, conn: ProxyConnection, direction: Direction,
                 message: Message) -> Verdict | bytes | None:
        phase = conn.state.get("ack")
        if direction == "client":
            return self._client(conn, message, phase)
        if phase == "executing":  # uncommitted: the ack ran, no Sync was sent
            if message.kind == b"C":
                self.command_tag = message.cstrings(1)[0]
                self._fire(conn, "reset on CommandComplete, transaction still open")
                return Verdict.RESET
            if message.kind == b"E":
                self.notes.append(f"the ack failed on the server: {message.body[:200]!r}")
            return Verdict.DROP
        if phase == "sent":  # committed: let it commit, swallow the reply
            if message.kind == b"C":
                self.command_tag = message.cstrings(1)[0]
            if message.kind == b"Z":
                self.ready_status = message.body[:1].decode()
                self._fire(conn, "reset on ReadyForQuery")
                return Verdict.RESET
            return Verdict.DROP
        return None

    def _client(self, conn: ProxyConnection, message: Message,  # noqa: PLR0911
                phase: object) -> Verdict | bytes | None:
        is_ack_bind = message.kind == b"B" and self.function in (conn.sql_of(message) or "")
        if is_ack_bind and self.cut.is_set():
            if not self.retry_held.is_set():
                self.retry_held.set()
                return Verdict.PAUSE
            return None
        if is_ack_bind and not conn.state.get("ack"):
            if self.mode == "lost":
                self._fire(conn, "reset before the Bind reached the server")
                return Verdict.RESET
            conn.state["ack"] = "bound" if self.mode == "uncommitted" else "sent"
            return None
        if phase == "bound" and message.kind == b"E":
            conn.state["ack"] = "executing"
            return message.data + b"H\x00\x00\x00\x04"  # Execute, then Flush instead of Sync
        if phase == "executing" and message.kind == b"S":
            return Verdict.DROP  # never commit
        return None

    def _fire(self, conn: ProxyConnection, what: str) -> None:
        conn.state["ack"] = "cut"
        self.notes.append(f"connection {conn.id} ({conn.application_name}): {what}")
        self.cut.set()


def task_row(db: Database, run_id: object, step: str) -> tuple[str, int]:
    rows = db.query("SELECT status, attempts_count FROM flowworker.step_tasks"
                    " WHERE run_id = %s AND step_slug = %s", (run_id, step))
    assert len(rows) == 1
    return str(rows[0][0]), int(rows[0][1])


@pytest.mark.parametrize("mode", ["lost", "uncommitted", "committed"])
def test_connection_cut_after_ack_is_sent_is_harmless(
        mode: CutMode, db: Database, ledger: Ledger, spawn: Spawn, db_url: str,
        db_proxy: Proxy) -> None:
    rule = AckCut(mode)
    db_proxy.add_rule(rule)
    # The worker talks to the database through the proxy; its handlers'
    # ledger goes straight to the database.
    worker = spawn("diamond", database_url=db_proxy.url(db_url),
                   env={"FLOWWORKER_DATABASE_URL": as_url(db_url)})
    n = 4  # one `square` task
    run_id = db.start_run("diamond", {"n": n})

    wait_until(rule.cut.is_set, timeout=20,
               message=lambda: "the first ack to be cut\n" + worker.tail())
    # The worker's retry of that ack is held at the proxy until we look.
    wait_until(rule.retry_held.is_set, timeout=20,
               message=lambda: f"the worker to retry the ack; {rule.notes}\n" + worker.tail())
    status, attempts = task_row(db, run_id, "prepare")
    assert attempts == 1
    if mode == "committed":
        assert rule.ready_status == "I", f"not committed: {rule.ready_status} {rule.notes}"
        assert status == "completed", "the cut ack should have committed"
    else:
        assert status == "started", f"the cut ack must not have committed ({rule.notes})"
    if mode != "lost":
        assert rule.command_tag == "SELECT 1", (rule.command_tag, rule.notes)
    db_proxy.restore()

    assert db.wait_runs([run_id], timeout=30, workers=[worker]) == {"completed": 1}
    assert db.run_outputs([run_id])[run_id] == diamond_expected(n)
    tasks = db.tasks([run_id])
    assert all(t.status == "completed" and t.attempts_count == 1 for t in tasks), tasks
    executions = ledger.executions_per_task([run_id])
    assert set(executions.values()) == {1}, f"a task ran twice: {executions}"
    assert len(executions) == len(tasks)

    assert worker.find("db.reconnecting", what="ack_tasks"), "the ack was not retried"
    assert worker.alive()
    surfaced = [e for e in worker.find(where=lambda e: e.get("event") in ERROR_EVENTS
                                       or e.get("level") in ("error", "critical"))]
    assert not surfaced, f"an error surfaced for a harmless retried ack: {surfaced}"
    completed = worker.find("task.completed", run_id=run_id, step="prepare")
    assert len(completed) == 1, f"prepare should be reported completed once: {completed}"


def test_retried_release_after_a_lost_reply_leaves_the_next_claim_alone(
        db: Database, ledger: Ledger, spawn: Spawn, db_url: str, db_proxy: Proxy,
        tmp_path: Path) -> None:
    """The same cut (committed, reply lost) on the worker's other acknowledgement,
    `release_tasks` (a graceful shutdown handing back a running task). While its
    retry is held, another worker claims the released task. The retried release
    must change nothing: repeating a call is harmless, and it must not hand
    back the other worker's claim (which would run the task a second time)."""
    gate = tmp_path / "gate"
    rule = AckCut("committed", function="flowworker.release_tasks")
    db_proxy.add_rule(rule)
    leaving = spawn("gated", name="leaving", database_url=db_proxy.url(db_url),
                    args=["--shutdown-timeout", "0.5"],
                    env={"FLOWWORKER_DATABASE_URL": as_url(db_url)})
    run_id = db.start_run("gated", {"gate": str(gate)})
    wait_until(lambda: ledger.count(run_ids=[run_id], step="hold") == 1, timeout=15,
               message=lambda: "hold to run in the first worker\n" + leaving.tail())
    leaving.terminate()  # the handler overruns 0.5 s: it is cancelled and released
    wait_until(rule.cut.is_set, timeout=15,
               message=lambda: "the release to be cut\n" + leaving.tail())
    wait_until(rule.retry_held.is_set, timeout=15,
               message=lambda: f"the release to be retried; {rule.notes}\n" + leaving.tail())
    assert rule.ready_status == "I", rule.notes  # the release committed

    staying = spawn("gated", name="staying")
    wait_until(lambda: ledger.count(run_ids=[run_id], step="hold") == 2, timeout=15,
               message=lambda: "the other worker to claim the released task\n"
               + staying.tail())
    claimed = db.query("SELECT started_at, worker_id FROM flowworker.step_tasks"
                       " WHERE run_id = %s AND step_slug = 'hold'", (run_id,))
    db_proxy.restore()  # the retried release goes through now
    assert leaving.wait_exit(timeout=30) == 0, leaving.tail()
    after = db.query("SELECT started_at, worker_id FROM flowworker.step_tasks"
                     " WHERE run_id = %s AND step_slug = 'hold'", (run_id,))
    gate.touch()
    assert db.wait_runs([run_id], timeout=30, workers=[staying]) == {"completed": 1}
    runs_of_hold = [(row.pid, row.attempt) for row in ledger.rows(run_ids=[run_id], step="hold")]
    assert after == claimed, (
        f"the retried release handed back the other worker's claim: {claimed} -> {after}; "
        f"hold executions (pid, attempt): {runs_of_hold}")
    assert runs_of_hold == [(leaving.pid, 1), (staying.pid, 1)], runs_of_hold
    assert len(staying.find("task.started", step="hold")) == 1
