"""Helpers of the worker fault tests (tests/faults/test_worker_*, test_load_*,
test_security_*), on top of tests/acceptance/harness.py.

- a claim log: a trigger on flowworker.step_tasks (in the test's own
  database) that records every claim with its worker and the database time,
  so that "no claim after the signal" can be checked after the fact;
- raw queue messages, put straight into a flow's queue;
- what a process holds: its TCP ports, its listening sockets, its CPU time;
- the server log and deadlock counter of the test cluster.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.acceptance.harness import Database, WorkerProcess, wait_until

FAULTS_APP = "tests.apps.faults"
# The daemon's connection names (worker/dbpool.py, worker/listener.py).
POOL_APPLICATION = "flowworker"
LISTENER_APPLICATION = "flowworker-listener"
POOL_SIZE = 3  # worker/runtime.py POOL_SIZE

Counter_ = dict[str, int]


# ---------------------------------------------------------------- claim log

CLAIM_LOG_DDL = """
CREATE TABLE public.claim_log (
    run_id uuid NOT NULL,
    step_slug text NOT NULL,
    task_index int NOT NULL,
    attempt int NOT NULL,
    worker_id uuid,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    txid bigint NOT NULL DEFAULT txid_current()  -- one claim (start_tasks call) each
);
CREATE FUNCTION public.log_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.claim_log (run_id, step_slug, task_index, attempt, worker_id)
    VALUES (NEW.run_id, NEW.step_slug, NEW.task_index, NEW.attempts_count, NEW.worker_id);
    RETURN NULL;
END;
$$;
CREATE TRIGGER zz_claim_log AFTER UPDATE ON flowworker.step_tasks
FOR EACH ROW WHEN (NEW.attempts_count > OLD.attempts_count)
EXECUTE FUNCTION public.log_claim();
"""


@dataclass(frozen=True)
class Claim:
    run_id: uuid.UUID
    step_slug: str
    task_index: int
    attempt: int
    worker_id: uuid.UUID | None
    at: datetime
    txid: int


def install_claim_log(db: Database) -> None:
    """Record every claim (a rise of attempts_count) from now on."""
    db.execute(CLAIM_LOG_DDL)


def claims(db: Database, *, run_ids: Sequence[uuid.UUID] | None = None,
           worker_ids: Sequence[str] | None = None, after: float | None = None) -> list[Claim]:
    """Claims logged so far, oldest first; `after` is a time.time() value."""
    rows = db.query(
        "SELECT run_id, step_slug, task_index, attempt, worker_id, at, txid"
        " FROM public.claim_log"
        " WHERE (%s::uuid[] IS NULL OR run_id = ANY(%s::uuid[]))"
        " AND (%s::uuid[] IS NULL OR worker_id = ANY(%s::uuid[]))"
        " AND (%s::float8 IS NULL OR at > to_timestamp(%s::float8))"
        " ORDER BY at",
        (run_ids, run_ids, worker_ids, worker_ids, after, after))
    return [Claim(*row) for row in rows]


# ---------------------------------------------------------------- queues

def send_raw(db: Database, flow: str, messages: Sequence[object]) -> list[int]:
    """Put messages straight into the flow's queue (visible now, NOTIFY sent);
    their msg_ids in order."""
    rows = db.query(sql.SQL("INSERT INTO {} (message) SELECT unnest(%s::jsonb[]) "
                            "RETURNING msg_id").format(sql.Identifier("flowworker", "q_" + flow)),
                    ([Jsonb(m) for m in messages],))
    db.execute("SELECT flowworker.queue_notify(%s)", (flow,))
    return [int(row[0]) for row in rows]


def queue_rows(db: Database, flow: str, msg_ids: Sequence[int], *,
               archive: bool = False) -> dict[int, int]:
    """{msg_id: read_ct} of those messages still in the queue (or in the archive)."""
    table = sql.Identifier("flowworker", ("a_" if archive else "q_") + flow)
    rows = db.query(sql.SQL("SELECT msg_id, read_ct FROM {} WHERE msg_id = ANY(%s)").format(
        table), (list(msg_ids),))
    return {int(msg_id): int(read_ct) for msg_id, read_ct in rows}


# ---------------------------------------------------------------- processes

def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return inodes
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


@dataclass(frozen=True)
class TcpSocket:
    local_host: str
    local_port: int
    remote_port: int
    state: str  # hex code from /proc/net/tcp: 01 established, 0A listen
    inode: int


def _decode_host(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/tcp6 stores four 32-bit words, each in host (little-endian) order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def tcp_sockets(pid: int) -> list[TcpSocket]:
    """The TCP sockets (IPv4 and IPv6) that process `pid` holds open."""
    inodes = _socket_inodes(pid)
    found: list[TcpSocket] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            inode = int(fields[9])
            if inode not in inodes:
                continue
            local_host, local_port = fields[1].split(":")
            _, remote_port = fields[2].split(":")
            found.append(TcpSocket(_decode_host(local_host), int(local_port, 16),
                                   int(remote_port, 16), fields[3], inode))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def connections_by_worker(db: Database, dbname: str,
                          workers: Sequence[WorkerProcess]) -> dict[str, Counter_]:
    """For each worker (by name): how many of the database's backends with
    the daemon's application names it holds, by application name.
    pg_stat_activity.client_port is matched against the worker's own sockets."""
    rows = db.query(
        "SELECT client_port, application_name FROM pg_stat_activity"
        " WHERE datname = %s AND application_name = ANY(%s) AND client_port IS NOT NULL",
        (dbname, [POOL_APPLICATION, LISTENER_APPLICATION]))
    by_port = {int(port): str(app) for port, app in rows}
    result: dict[str, Counter_] = {}
    for worker in workers:
        counts: Counter_ = {}
        if worker.alive():
            for sock in tcp_sockets(worker.pid):
                app = by_port.get(sock.local_port)
                if app is not None:
                    counts[app] = counts.get(app, 0) + 1
        result[worker.name] = counts
    return result


# ---------------------------------------------------------------- server

def deadlocks(db: Database, dbname: str) -> int:
    value: Any = db.scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = %s",
                           (dbname,))
    return int(value or 0)


def log_size(path: Path | None) -> int:
    return path.stat().st_size if path is not None and path.exists() else 0


def log_lines_since(path: Path | None, offset: int) -> list[str]:
    if path is None or not path.exists():
        return []
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", "replace").splitlines()


@contextlib.contextmanager
def run_row_locked(db_url: str, run_id: uuid.UUID) -> Iterator[None]:
    """Hold the run's row lock until the block ends, as an application's
    transaction may (cancel_run, then slow work).

    The holding transaction stays active, not idle, waiting on an advisory
    lock this side holds (an idle transaction would trip invariant I7)."""
    key = uuid.uuid4().int % (1 << 62)
    with psycopg.connect(db_url, autocommit=True) as opener, psycopg.connect(db_url) as holder:
        opener.execute("SELECT pg_advisory_lock(%s)", (key,))

        def hold() -> None:
            with holder.transaction():
                holder.execute("SELECT 1 FROM flowworker.runs WHERE run_id = %s FOR UPDATE",
                               (run_id,))
                holder.execute("SELECT pg_advisory_xact_lock(%s)", (key,))

        thread = threading.Thread(target=hold, name="run-row-lock")
        thread.start()
        try:
            wait_until(lambda: opener.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND objid = (%s::bigint & 4294967295)::oid", (key,)).fetchone() == (1,),
                timeout=10, message="the run's row lock to be held")
            yield
        finally:
            opener.execute("SELECT pg_advisory_unlock(%s)", (key,))
            thread.join(timeout=10)
