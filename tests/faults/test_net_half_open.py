# ruff: noqa: F811 - the acceptance fixtures are imported so that pytest finds them here
"""RELIABILITY D6: half-open TCP. The fault proxy blackholes every connection
of a worker (open ones and new ones: the sockets stay open, nothing moves
either way, not even a FIN) for 2 x vt while it holds claimed tasks, then
the network heals and what was sent meanwhile is delivered late.

Pass:
- the worker notices within a bounded time (FLOWWORKER_COMMAND_TIMEOUT plus
  a poll interval): it logs a timed-out database call and /readyz turns
  not-ready; it stays up;
- it claims and starts nothing during the partition;
- a second worker, not behind the proxy, re-claims the tasks after their
  visibility timeout (not before) and completes them;
- when the partition ends, the first worker's completions (computed during
  the partition, retried since) are rejected as stale, as in F4: outputs are
  the second worker's, the downstream step ran once per run, nothing was
  applied twice; and the first worker goes back to work.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from flowworker.devdb import free_port
from tests.acceptance.harness import Database, Event, Ledger, as_url, http_get, wait_until
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

RUNS = 10
COMMAND_TIMEOUT = 3.0
VT = 3 + 5  # gated_kill: task timeout + claim_grace
PARTITION = 2 * VT
# The first blocked call starts within a poll interval (<= 1 s) and times out
# after command_timeout; the rest is slack for a loaded 2-core machine.
NOTICE_BOUND = COMMAND_TIMEOUT + 1.0 + 3.0
TIMED_OUT = {"TimeoutError", "ConnectionLostError", "QueryCanceledError"}


def noticed(event: Event) -> bool:
    return (event.get("event") in ("db.reconnecting", "listener.lost",
                                   "worker.heartbeat_missed")
            and str(event.get("error")) in TIMED_OUT)


def claims_by(db: Database, worker_ids: set[str], after: float, before: float) -> int:
    """Claims recorded for these workers between two test-clock instants (DB clock)."""
    return int(db.scalar(
        "SELECT count(*) FROM flowworker.step_tasks WHERE worker_id = ANY(%s::uuid[])"
        " AND started_at > to_timestamp(%s) AND started_at < to_timestamp(%s)",
        (list(worker_ids), after, before)))


def test_half_open_connections_for_two_vt(db: Database, ledger: Ledger, spawn: Spawn,
                                          db_url: str, db_proxy: Proxy,
                                          tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    metrics_port = free_port()
    partitioned = spawn(
        "gated_kill", name="partitioned", database_url=db_proxy.url(db_url),
        args=["--concurrency", "25", "--metrics-addr", f"127.0.0.1:{metrics_port}"],
        env={"FLOWWORKER_DATABASE_URL": as_url(db_url),  # the handlers' ledger: direct
             "FLOWWORKER_COMMAND_TIMEOUT": str(COMMAND_TIMEOUT)})
    readyz = f"http://127.0.0.1:{metrics_port}/readyz"
    assert http_get(readyz)[0] == 200
    run_ids = db.start_runs("gated_kill", [{"gate": str(gate)}] * RUNS)
    wait_until(lambda: ledger.count(run_ids=run_ids, step="hold") == RUNS, timeout=20,
               message=lambda: "every hold task running in the partitioned worker\n"
               + partitioned.tail())
    first = {row.run_id: row for row in ledger.rows(run_ids=run_ids, step="hold")}
    assert {(row.pid, row.attempt) for row in first.values()} == {(partitioned.pid, 1)}

    # The partition. The handlers finish during it; their acks cannot get through.
    began = time.time()
    db_proxy.blackhole()
    gate.touch()
    event = partitioned.wait_for_event("db.reconnecting", where=noticed, timeout=NOTICE_BOUND + 5)
    first_notice = min(float(e["_received"]) for e in partitioned.find(where=noticed))
    assert first_notice - began <= NOTICE_BOUND, (
        f"noticed the dead connections after {first_notice - began:.1f} s: {event}")
    wait_until(lambda: http_get(readyz, timeout=3)[0] == 503, timeout=NOTICE_BOUND,
               message="/readyz to report the database unreachable")

    takeover = spawn("gated_kill", name="takeover", args=["--concurrency", "25"])
    counts = db.wait_runs(run_ids, timeout=VT + 20, workers=[takeover, partitioned])
    assert counts == {"completed": RUNS}
    assert db_proxy.blackholed, "the runs must complete while the first worker is cut off"

    # Keep the partition for its full length (the pause is the fault).
    time.sleep(max(0.0, began + PARTITION - time.time()))
    assert partitioned.alive(), "a half-open connection must not kill the worker\n" + (
        partitioned.tail())
    healed = time.time()
    assert claims_by(db, partitioned.worker_ids, began + 0.5, healed) == 0, (
        "the cut-off worker claimed tasks during the partition")
    assert {row.pid for row in ledger.rows(run_ids=run_ids)
            if row.pid == partitioned.pid} == {partitioned.pid}
    assert len([r for r in ledger.rows() if r.pid == partitioned.pid]) == RUNS, (
        "the cut-off worker started a handler during the partition")
    db_proxy.restore()

    # The stale completions come through, and are rejected.
    partitioned.wait_for_event("task.stale", step="hold", count=RUNS, timeout=30)
    assert not partitioned.find("task.completed", step="hold")
    for run_id, output in db.run_outputs(run_ids).items():
        assert output == {"after": {"hold": {"pid": takeover.pid, "attempt": 2},
                                    "pid": takeover.pid}}, run_id
    for task in db.tasks(run_ids):
        assert task.status == "completed"
        assert task.attempts_count == (2 if task.step_slug == "hold" else 1), task
    assert ledger.count(run_ids=run_ids, step="after") == RUNS

    for row in ledger.rows(run_ids=run_ids, step="hold"):
        if row.pid == partitioned.pid:
            continue
        assert (row.pid, row.attempt) == (takeover.pid, 2)
        waited = (row.at - first[row.run_id].at).total_seconds()
        assert waited >= VT - 0.5, f"re-claimed {waited:.2f} s after the claim, before vt"
        assert waited <= VT + 6, f"re-claimed {waited:.2f} s after the claim (vt + 6 s)"

    # The first worker is back: with the other one gone, it runs new work.
    takeover.terminate()
    assert takeover.wait_exit(timeout=30) == 0
    wait_until(lambda: http_get(readyz, timeout=3)[0] == 200, timeout=20,
               message=lambda: "/readyz to recover\n" + partitioned.tail())
    fresh: list[uuid.UUID] = db.start_runs("gated_kill", [{}] * 3)
    assert db.wait_runs(fresh, timeout=20, workers=[partitioned]) == {"completed": 3}
    assert {row.pid for row in ledger.rows(run_ids=fresh)} == {partitioned.pid}


LISTENER_APP = "flowworker-listener"
# Detection (CHECK_INTERVAL 2 s + CHECK_TIMEOUT 3 s in flowworker.daemon.listener, or
# command_timeout), the reconnect backoff (<= 5 s) and slack for a loaded machine.
LISTENER_BACK_WITHIN = 20.0


def test_listener_connection_half_open_while_subscribing(
        db: Database, spawn: Spawn, db_url: str, db_proxy: Proxy) -> None:
    """The LISTEN connection goes half-open right after it reconnected, while it
    subscribes (its LISTEN never answers, the partition never heals). The
    worker must notice within a bounded time and listen again on a new
    connection, as it does when the connection dies while idle (D2)."""
    held: list[int] = []

    def hold_relisten(conn: ProxyConnection, direction: Direction,
                      message: Message) -> Verdict | None:
        sql = conn.sql_of(message) or ""
        if (direction == "client" and conn.application_name == LISTENER_APP
                and message.kind in (b"P", b"Q") and sql.startswith("LISTEN")
                and conn.id not in first_listener and not held):
            held.append(conn.id)
            return Verdict.PAUSE  # this connection stays blackholed
        return None

    worker = spawn("ping", name="listening", database_url=db_proxy.url(db_url),
                   env={"FLOWWORKER_DATABASE_URL": as_url(db_url),
                        "FLOWWORKER_COMMAND_TIMEOUT": str(COMMAND_TIMEOUT)})
    first_listener = {c.id for c in db_proxy.open_connections()
                      if c.application_name == LISTENER_APP}
    assert len(first_listener) == 1, db_proxy.connections()
    db_proxy.add_rule(hold_relisten)
    listening = len(worker.find("listener.connected"))
    assert db_proxy.reset_all(lambda c: c.id in first_listener) == 1
    worker.wait_for_event("listener.lost", timeout=10)
    wait_until(lambda: held, timeout=15,
               message=lambda: "the listener to reconnect and send LISTEN\n" + worker.tail())
    cut_at = time.monotonic()
    worker.wait_for_event("listener.connected", count=listening + 1,
                          timeout=LISTENER_BACK_WITHIN)
    back_after = time.monotonic() - cut_at
    assert worker.alive()
    print(f"\nD6 listener: listening again {back_after:.1f} s after its LISTEN hung")  # noqa: T201
    # And it works: a run starts at once, woken by NOTIFY.
    run_id = db.start_run("ping", {})
    assert db.wait_runs([run_id], timeout=10, workers=[worker]) == {"completed": 1}


SHUTDOWN_TIMEOUT = 2.0
# The drain timeout, one database call that has to time out, and slack.
EXIT_BOUND = SHUTDOWN_TIMEOUT + COMMAND_TIMEOUT + 5.0


def test_sigterm_while_half_open_exits_within_the_shutdown_timeout(
        db: Database, ledger: Ledger, spawn: Spawn, db_url: str, db_proxy: Proxy,
        tmp_path: Path) -> None:
    """SIGTERM while the database is unreachable behind a half-open network,
    with finished outcomes still to write. The shutdown contract: wait up to
    --shutdown-timeout, then exit 0; what could not be written is
    redelivered after its visibility timeout (and completed once elsewhere)."""
    gate = tmp_path / "gate"
    worker = spawn("gated_kill", name="stopping", database_url=db_proxy.url(db_url),
                   args=["--shutdown-timeout", str(SHUTDOWN_TIMEOUT)],
                   env={"FLOWWORKER_DATABASE_URL": as_url(db_url),
                        "FLOWWORKER_COMMAND_TIMEOUT": str(COMMAND_TIMEOUT)})
    run_ids = db.start_runs("gated_kill", [{"gate": str(gate)}] * 3)
    wait_until(lambda: ledger.count(run_ids=run_ids, step="hold") == 3, timeout=15,
               message=lambda: "the hold tasks to run\n" + worker.tail())
    db_proxy.blackhole()
    gate.touch()  # the handlers finish; their outcomes cannot be written
    worker.wait_for_event("db.reconnecting", what="ack_tasks", timeout=COMMAND_TIMEOUT + 5)
    sent = time.monotonic()
    worker.terminate()
    late: str | None = None
    try:
        code = worker.wait_exit(timeout=EXIT_BOUND)
    except AssertionError as exc:
        late = str(exc)
    finally:
        db_proxy.restore()
    took = time.monotonic() - sent
    if late is not None:  # let it finish now that the network is back, then report
        code = worker.wait_exit(timeout=60)
    # What it could not write is redelivered and completed once, elsewhere.
    takeover = spawn("gated_kill", name="takeover")
    assert db.wait_runs(run_ids, timeout=VT + 20, workers=[takeover]) == {"completed": 3}
    assert late is None, f"no exit within {EXIT_BOUND:.0f} s of SIGTERM: {late}"
    assert code == 0, worker.tail()
    assert took <= EXIT_BOUND, f"exited {took:.1f} s after SIGTERM"
