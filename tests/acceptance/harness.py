"""The acceptance harness (RELIABILITY.md "Harness").

- `WorkerProcess`: `python -m flowworker run ...` as a real subprocess, with a
  reader thread that collects its JSON log lines, so that a test can wait
  for an event with a deadline, signal it, kill it, freeze it.
- `Database`: the test's own connection (reconnects after a fault) and run
  helpers.
- `Ledger`: the effect ledger that the test handlers (tests/apps/ledger.py)
  write every execution to.
- `check_worker_logs` (one applied completion per task, from the logs),
  beside the SQL invariants of tests/support/invariants.py (I1-I7;
  `check_invariants` is offered here too).
- `wait_until`: poll a condition with a deadline; the only way tests wait.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote, urlencode

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from flowworker.compiler import compile_flow
from flowworker.registry import load_flows

# Re-exported: the fault tiers take the checker from here too.
from tests.support.invariants import check_invariants as check_invariants  # noqa: PLC0414

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = "tests.apps.flows"
TERMINAL_RUN_STATUSES = ("completed", "failed", "cancelled")

T = TypeVar("T")
Event = dict[str, Any]


# ---------------------------------------------------------------- waiting

def wait_until(condition: Callable[[], T | None], *, timeout: float, interval: float = 0.05,
               message: str | Callable[[], str] = "condition") -> T:
    """Call condition until it returns something truthy; return that.

    Raises AssertionError naming `message` when `timeout` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {text}")
        time.sleep(interval)


# ---------------------------------------------------------------- worker processes

def as_url(conninfo: str) -> str:
    """A `postgresql://` URL for a libpq conninfo (key=value or URL).

    The fixtures hand out key=value strings; the daemon's contract is a URL.
    """
    if conninfo.startswith(("postgresql://", "postgres://")):
        return conninfo
    params = conninfo_to_dict(conninfo)
    user = quote(str(params.pop("user", "postgres")), safe="")
    password = params.pop("password", None)
    auth = user + (":" + quote(str(password), safe="") if password is not None else "")
    host = str(params.pop("host", "127.0.0.1"))
    port = str(params.pop("port", "5432"))
    dbname = quote(str(params.pop("dbname", "postgres")), safe="")
    query = urlencode({key: str(value) for key, value in params.items()})
    return f"postgresql://{auth}@{host}:{port}/{dbname}" + (f"?{query}" if query else "")


class WorkerProcess:
    """One `flowworker run` subprocess and the events it logged."""

    def __init__(self, database_url: str, flows: Sequence[str], *, app: str = APP,
                 args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 name: str = "worker", log_dir: Path | None = None,
                 pass_database_url: bool = True) -> None:
        self.database_url = as_url(database_url)
        self.flows = list(flows)
        self.app = app
        self.args = list(args)
        self.name = name
        self.log_dir = log_dir
        self.pass_database_url = pass_database_url
        self.env = dict(os.environ)
        # DEBUG: the tests read task.started / task.completed events.
        self.env.update({"FLOWWORKER_DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1",
                         "FLOWWORKER_LOG_LEVEL": "DEBUG"})
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.events: list[Event] = []
        self.lines: list[str] = []
        self.started_at = 0.0
        self._cond = threading.Condition()
        self._eof = False
        self._reader: threading.Thread | None = None
        self._log: IO[str] | None = None
        self._stopped = False

    # -- lifecycle

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "flowworker", "run"]
        for flow in self.flows:
            cmd += ["--flow", flow]
        cmd += ["--app", self.app, "--log-format", "json"]
        if self.pass_database_url:
            cmd += ["--database-url", self.database_url]
        if not any(arg.startswith("--metrics-addr") for arg in self.args):
            cmd += ["--metrics-addr", "off"]  # two workers would fight over the default port
        return cmd + self.args

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0) -> WorkerProcess:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._log = (self.log_dir / f"{self.name}.log").open("w")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(), cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-stderr",
                                        daemon=True)
        self._reader.start()
        if wait_ready:
            self.wait_for_event("worker.ready", timeout=timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            received = time.time()
            parsed: object = None
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
            with self._cond:
                self.lines.append(line)
                if isinstance(parsed, dict) and "event" in parsed:
                    parsed["_received"] = received
                    self.events.append(parsed)
                if self._log is not None:
                    self._log.write(line + "\n")
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            if self._log is not None:
                self._log.close()
                self._log = None
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the worker was not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> float:
        """Send sig; return time.time() just before it was sent."""
        assert self.proc is not None
        sent = time.time()
        self.proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            self._stopped = True
        elif sig == signal.SIGCONT:
            self._stopped = False
        return sent

    def terminate(self) -> float:
        return self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, and reap the process."""
        if self.alive():
            self.send_signal(signal.SIGKILL)
        self.wait_exit(timeout=10)

    def freeze(self) -> None:
        self.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.send_signal(signal.SIGCONT)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit and its stderr to be read; its exit code."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} (pid {self.proc.pid}) did not exit within {timeout:.1f} s\n"
                + self.tail()) from None
        if self._reader is not None:
            self._reader.join(timeout=10)
        return code

    def close(self) -> None:
        """Teardown: wake it if frozen, kill it if alive."""
        if self.proc is None:
            return
        if self.alive():
            if self._stopped:
                self.thaw()
            self.proc.kill()
        with contextlib.suppress(AssertionError):
            self.wait_exit(timeout=10)

    # -- events

    def stderr_text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def tail(self, n: int = 40) -> str:
        with self._cond:
            lines = self.lines[-n:]
        code = self.returncode
        state = "running" if code is None else f"exited with {code}"
        return f"--- last {len(lines)} stderr lines of {self.name} ({state}):\n" + "\n".join(lines)

    def find(self, name: str | None = None, *, where: Callable[[Event], bool] | None = None,
             **fields: object) -> list[Event]:
        """Events logged so far that match name, fields (compared as text) and where."""
        with self._cond:
            events = list(self.events)
        return [e for e in events if _matches(e, name, where, fields)]

    def wait_for_event(self, name: str, *, timeout: float = 30.0, count: int = 1,
                       where: Callable[[Event], bool] | None = None,
                       **fields: object) -> Event:
        """Wait until `count` matching events were logged; return the last of them.

        Fails at once when the process exits first, with its last lines.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        position = 0
        with self._cond:
            while True:
                for event in self.events[position:]:
                    if _matches(event, name, where, fields):
                        seen += 1
                        if seen >= count:
                            return event
                position = len(self.events)
                if self._eof:
                    raise AssertionError(
                        f"{self.name} exited before logging {count} x {name} {fields}\n"
                        + self._tail_locked())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out after {timeout:.1f} s waiting for {self.name} to log "
                        f"{count} x {name} {fields} (saw {seen})\n" + self._tail_locked())
                self._cond.wait(remaining)

    def _tail_locked(self, n: int = 40) -> str:
        lines = self.lines[-n:]
        return f"--- last {len(lines)} stderr lines of {self.name}:\n" + "\n".join(lines)

    @property
    def worker_ids(self) -> set[str]:
        ids: set[str] = set()
        for event in self.find("worker.started"):
            value = event.get("worker_id")
            if isinstance(value, list):
                ids.update(str(v) for v in value)
            elif value is not None:
                ids.add(str(value))
        return ids


def _matches(event: Event, name: str | None, where: Callable[[Event], bool] | None,
             fields: Mapping[str, object]) -> bool:
    if name is not None and event.get("event") != name:
        return False
    for key, value in fields.items():
        if str(event.get(key)) != str(value):
            return False
    return where is None or where(event)


def task_key(event: Event) -> tuple[str, str, int]:
    return (str(event.get("run_id")), str(event.get("step")), int(event.get("task_index", 0)))


# ---------------------------------------------------------------- database

class Database:
    """The test's connection to its database. Reads survive a reconnect."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def execute(self, query: str | sql.Composed, params: Sequence[Any] = ()) -> None:
        self.conn.execute(query, params)

    def query(self, query: str | sql.Composed, params: Sequence[Any] = (), *,
              retry: bool = True) -> list[tuple[Any, ...]]:
        """Run a read; after a dropped connection, reconnect and run it once more."""
        try:
            return self.conn.execute(query, params).fetchall()
        except psycopg.OperationalError:
            self.close()
            if not retry:
                raise
            return self.conn.execute(query, params).fetchall()

    def scalar(self, query: str | sql.Composed, params: Sequence[Any] = ()) -> Any:
        rows = self.query(query, params)
        return rows[0][0] if rows else None

    def now(self) -> datetime:
        value: datetime = self.scalar("SELECT clock_timestamp()")
        return value

    # -- runs

    def start_runs(self, flow: str, inputs: Sequence[object]) -> list[uuid.UUID]:
        """Start one run per input, all in one transaction; the run ids in order.

        Run ids are chosen here, so a retry after a lost connection is an
        idempotent start.
        """
        run_ids = [uuid.uuid4() for _ in inputs]
        self.query(
            "SELECT s.run_id FROM unnest(%s::jsonb[], %s::uuid[]) WITH ORDINALITY"
            " AS u(input, id, i), LATERAL flowworker.start_flow(%s, u.input, u.id) s"
            " ORDER BY u.i",
            ([Jsonb(value) for value in inputs], run_ids, flow))
        return run_ids

    def start_run(self, flow: str, flow_input: object) -> uuid.UUID:
        return self.start_runs(flow, [flow_input])[0]

    def run_statuses(self, run_ids: Iterable[uuid.UUID]) -> Counter[str]:
        rows = self.query("SELECT status, count(*) FROM flowworker.runs WHERE run_id = ANY(%s)"
                          " GROUP BY status", (list(run_ids),))
        return Counter({str(status): int(n) for status, n in rows})

    def wait_runs(self, run_ids: Sequence[uuid.UUID], *, timeout: float,
                  statuses: Sequence[str] = TERMINAL_RUN_STATUSES,
                  workers: Sequence[WorkerProcess] = ()) -> Counter[str]:
        """Wait until every run has one of `statuses`; the final status counts."""
        counts: Counter[str] = Counter()

        def done() -> bool:
            nonlocal counts
            counts = self.run_statuses(run_ids)
            return sum(counts[s] for s in statuses) == len(run_ids)

        def describe() -> str:
            text = f"{len(run_ids)} runs to reach {statuses}; now {dict(counts)}"
            return "\n".join([text, *(w.tail(15) for w in workers)])

        wait_until(done, timeout=timeout, interval=0.1, message=describe)
        return counts

    def run_outputs(self, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
        rows = self.query("SELECT run_id, output FROM flowworker.runs WHERE run_id = ANY(%s)",
                          (list(run_ids),))
        return {run_id: output for run_id, output in rows}

    def tasks(self, run_ids: Sequence[uuid.UUID], step: str | None = None) -> list[TaskRow]:
        rows = self.query(
            "SELECT run_id, step_slug, task_index, status, attempts_count, output, error_message"
            " FROM flowworker.step_tasks WHERE run_id = ANY(%s) AND (%s::text IS NULL OR"
            " step_slug = %s) ORDER BY run_id, step_slug, task_index",
            (list(run_ids), step, step))
        return [TaskRow(*row) for row in rows]


@dataclass(frozen=True)
class TaskRow:
    run_id: uuid.UUID
    step_slug: str
    task_index: int
    status: str
    attempts_count: int
    output: Any
    error_message: str | None


def apply_flows(database_url: str, app: str = APP) -> list[str]:
    """Compile every flow of the app module and apply it; the slugs applied."""
    flows = load_flows(app)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for flow in flows.values():
            conn.execute(compile_flow(flow).encode())
    return sorted(flows)


# ---------------------------------------------------------------- ledger

LEDGER_DDL = """
CREATE TABLE public.ledger (
    exec_id uuid PRIMARY KEY,          -- one per execution; a retried insert reuses it
    run_id uuid NOT NULL,
    step_slug text NOT NULL,
    task_index int NOT NULL,
    attempt int NOT NULL,
    pid int NOT NULL,
    note text,                         -- NULL for an execution; else a marker
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


@dataclass(frozen=True)
class LedgerRow:
    run_id: uuid.UUID
    step_slug: str
    task_index: int
    attempt: int
    pid: int
    note: str | None
    at: datetime

    @property
    def task(self) -> tuple[uuid.UUID, str, int]:
        return (self.run_id, self.step_slug, self.task_index)


class Ledger:
    """What the test handlers executed, as they recorded it."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self) -> None:
        self.db.execute(LEDGER_DDL)

    def rows(self, *, run_ids: Sequence[uuid.UUID] | None = None, step: str | None = None,
             note: str | None = None, executions: bool = True) -> list[LedgerRow]:
        """Ledger rows, oldest first. executions=True: only executions (no markers)."""
        rows = self.db.query(
            "SELECT run_id, step_slug, task_index, attempt, pid, note, at FROM public.ledger"
            " WHERE (%s::uuid[] IS NULL OR run_id = ANY(%s::uuid[]))"
            " AND (%s::text IS NULL OR step_slug = %s)"
            " AND (CASE WHEN %s THEN note IS NULL ELSE %s::text IS NULL OR note = %s END)"
            " ORDER BY at",
            (run_ids, run_ids, step, step, executions, note, note))
        return [LedgerRow(*row) for row in rows]

    def count(self, *, run_ids: Sequence[uuid.UUID] | None = None,
              step: str | None = None) -> int:
        return len(self.rows(run_ids=run_ids, step=step))

    def executions_per_task(self, run_ids: Sequence[uuid.UUID] | None = None,
                            ) -> Counter[tuple[uuid.UUID, str, int]]:
        return Counter(row.task for row in self.rows(run_ids=run_ids))


# ---------------------------------------------------------------- invariants

def check_worker_logs(workers: Iterable[WorkerProcess]) -> list[str]:
    """I4 from the logs: at most one applied completion per task over all
    workers. A `task.completed` counts unless the same worker also logged
    `task.stale` for that task and attempt."""
    applied: Counter[tuple[str, str, int]] = Counter()
    for worker in workers:
        stale = {(task_key(e), str(e.get("attempt"))) for e in worker.find("task.stale")}
        for event in worker.find("task.completed"):
            if (task_key(event), str(event.get("attempt"))) not in stale:
                applied[task_key(event)] += 1
    return [f"I4 task completed {n} times in the logs: {key}"
            for key, n in applied.items() if n > 1][:20]


# ---------------------------------------------------------------- faults

def terminate_backends(admin_url: str, dbname: str, *,
                       spare_applications: Sequence[str] = ()) -> int:
    """pg_terminate_backend every session of dbname but ours and the spared
    application names; how many were terminated."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()"
            " AND NOT (application_name = ANY(%s))", (dbname, list(spare_applications)),
        ).fetchall()
    return int(rows[0][0])


def set_connections_allowed(admin_url: str, dbname: str, allowed: bool) -> None:
    """Make one database unreachable (and drop its sessions) or reachable again."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(dbname), sql.SQL("true" if allowed else "false")))
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))


# ---------------------------------------------------------------- http, metrics

def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body); an HTTP error status is returned, not raised, and
    status 0 means nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our URL
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError as exc:  # URLError, refused, reset, timed out
        return 0, f"{type(exc).__name__}: {exc}"


Sample = tuple[str, dict[str, str], float]


def scrape(base_url: str) -> list[Sample]:
    status, body = http_get(base_url + "/metrics")
    assert status == 200, f"/metrics answered {status}: {body[:500]}"
    return [(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(body) for s in family.samples]


def metric(samples: Sequence[Sample], name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    return sum(value for sample_name, sample_labels, value in samples
               if sample_name == name and all(sample_labels.get(k) == v
                                              for k, v in labels.items()))


def has_metric(samples: Sequence[Sample], name: str) -> bool:
    return any(sample_name == name for sample_name, _, _ in samples)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
