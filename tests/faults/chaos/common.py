"""Pieces shared by the chaos runs: a dedicated cluster, a database with the
chaos flows and the ledger, a steady producer of runs, and a pool of worker
processes that a supervisor keeps alive (and may kill -9 on purpose)."""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from flowworker.devdb import LocalCluster
from flowworker.migrator import migrate
from tests.acceptance.harness import Database, Ledger, WorkerProcess, apply_flows

APP = "tests.faults.chaos.flows"
FLOW = "chaos"

# A durable cluster: crash restarts with fsync off can corrupt it. The soak
# reads claim latency from pg_stat_statements.
CLUSTER_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "top",
    "autovacuum_naptime": "15s",
}


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def env_number(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


class ChaosCluster:
    """A LocalCluster of its own in a temporary folder (never the tests' one)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="flowworker-chaos-"))
        self.cluster = LocalCluster(self.base / "pg", settings=dict(CLUSTER_SETTINGS))
        self.lock = threading.Lock()  # stop/start one at a time

    def start(self) -> ChaosCluster:
        self.cluster.start()
        return self

    def url(self, dbname: str) -> str:
        return self.cluster.url(dbname)

    def crash_restart(self) -> float:
        """stop -m immediate (a crash: no checkpoint, recovery on start), then
        start; the seconds the server was away."""
        with self.lock:
            began = time.monotonic()
            self.cluster.stop("immediate")
            self.cluster.start()
            return time.monotonic() - began

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())
            conn.execute(f"CREATE DATABASE {name}".encode())
        url = self.url(name)
        migrate(url)
        apply_flows(url, APP)
        Ledger(Database(url)).create()
        return url

    def close(self, *, keep: bool) -> None:
        with self.lock:
            self.cluster.stop("fast")
        if not keep:
            shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class Producer:
    """Starts runs of the chaos flow at a steady rate, in small batches, with
    run ids chosen up front: a batch whose commit is in doubt (the server went
    away) is retried with the same ids, an idempotent start. `started` holds
    every run id whose start is known to have committed, with its n."""

    url: str
    rate: float  # runs per second
    batch: int = 5
    flow: str = FLOW
    started: dict[uuid.UUID, int] = field(default_factory=dict)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Producer:
        self._thread = threading.Thread(target=self._run, name="chaos-producer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def count(self) -> int:
        with self._lock:
            return len(self.started)

    def snapshot(self) -> dict[uuid.UUID, int]:
        with self._lock:
            return dict(self.started)

    def latest(self, n: int) -> list[uuid.UUID]:
        """The last n runs started (dicts keep insertion order)."""
        with self._lock:
            return list(self.started)[-n:]

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        n = 0
        interval = self.batch / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            if self._stop.is_set():
                break
            next_at += interval
            inputs = list(range(n, n + self.batch))
            n += self.batch
            ids = [uuid.uuid4() for _ in inputs]
            while True:  # the same batch until it is known to have committed
                try:
                    if conn is None or conn.closed or conn.broken:
                        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                               application_name="flowworker_chaos_producer")
                    conn.execute(
                        "SELECT count(*) FROM unnest(%s::jsonb[], %s::uuid[]) AS u(input, id),"
                        " LATERAL flowworker.start_flow(%s, u.input, u.id)",
                        ([Jsonb({"n": i}) for i in inputs], ids, self.flow))
                    break
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    self.failures += 1
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(0.5)  # the server is away; ask again soon
            with self._lock:
                self.started.update(zip(ids, inputs, strict=True))
            if time.monotonic() - next_at > 5:
                next_at = time.monotonic()  # do not burst to catch up after an outage
        if conn is not None:
            conn.close()


@dataclass
class Exit:
    name: str
    code: int | None
    tail: str


class WorkerPool:
    """`size` worker processes; a supervisor thread restarts any that is gone
    (killed on purpose or not). Every incarnation is kept for the audit."""

    def __init__(self, url: str, size: int, log_dir: Path,
                 args: tuple[str, ...] = ("--concurrency", "10"),
                 flows: tuple[str, ...] = (FLOW,)) -> None:
        self.url = url
        self.flows = list(flows)
        self.size = size
        self.log_dir = log_dir
        self.args = args
        self.slots: list[WorkerProcess | None] = [None] * size
        self.all: list[WorkerProcess] = []
        self.killed: set[int] = set()  # pids we SIGKILLed
        self.unexpected: list[Exit] = []  # exits we did not cause
        self.restarts = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="chaos-supervisor",
                                        daemon=True)

    def start(self) -> WorkerPool:
        for slot in range(self.size):
            self._spawn(slot)
        self._thread.start()
        return self

    def _spawn(self, slot: int) -> None:
        generation = sum(1 for w in self.all if w.name.startswith(f"w{slot}-"))
        worker = WorkerProcess(self.url, self.flows, app=APP, args=self.args,
                               name=f"w{slot}-{generation}", log_dir=self.log_dir)
        worker.start(wait_ready=False)
        with self._lock:
            self.slots[slot] = worker
            self.all.append(worker)

    def _supervise(self) -> None:
        while not self._stop.wait(0.5):
            for slot in range(self.size):
                with self._lock:
                    worker = self.slots[slot]
                if worker is None or worker.alive():
                    continue
                if worker.pid not in self.killed:
                    self.unexpected.append(Exit(worker.name, worker.returncode,
                                                worker.tail(8)))
                self.restarts += 1
                self._spawn(slot)

    def kill_random(self, rng: random.Random) -> str | None:
        """kill -9 one live worker at random; its name."""
        with self._lock:
            live = [w for w in self.slots if w is not None and w.alive()]
        if not live:
            return None
        victim = rng.choice(live)
        self.killed.add(victim.pid)
        victim.kill()
        return victim.name

    def stop(self) -> None:
        """Stop supervising; SIGTERM every worker and wait for it."""
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            workers = [w for w in self.slots if w is not None]
        for worker in workers:
            if worker.alive():
                worker.terminate()
        for worker in workers:
            try:
                worker.wait_exit(timeout=45)
            except AssertionError:
                worker.close()


class Every:
    """Calls `action` at random intervals in [low, high] seconds on a thread."""

    def __init__(self, name: str, low: float, high: float, action: Callable[[], None],
                 rng: random.Random) -> None:
        self.low, self.high = low, high
        self.action = action
        self.rng = rng
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.errors: list[str] = []

    def start(self) -> Every:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(self.low, self.high)):
            try:
                self.action()
            except Exception as exc:  # reported, never fatal to the run
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
