"""The handler side of the acceptance harness: the effect ledger and gates.

Every test handler records each execution in the `ledger` table (created by
the test, see tests/acceptance/harness.py) over its own autocommit
connection, opened lazily from FLOWWORKER_DATABASE_URL. Executions whose
completion is later rejected are recorded too: that is the point.

A write survives connection loss (pg_terminate_backend, a server restart):
it reconnects and retries for a while under the same `exec_id`, so a retried
insert whose first try did commit is not counted twice.

Gates are files: a handler given `{"gate": PATH}` in its flow input blocks
until the test creates PATH.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from flowworker import Context

APPLICATION_NAME = "flowworker_test_ledger"
RETRY_FOR_SECONDS = 60.0
GATE_POLL_SECONDS = 0.02

_lock = threading.Lock()
_conn: psycopg.Connection | None = None
# Async handlers write through this pool, so that a write that waits for a
# reconnect never blocks the worker's event loop.
_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ledger")


def _connect() -> psycopg.Connection:
    url = os.environ["FLOWWORKER_DATABASE_URL"]
    return psycopg.connect(url, autocommit=True, application_name=APPLICATION_NAME,
                           connect_timeout=5)


def _insert(exec_id: uuid.UUID, ctx: Context, note: str | None) -> None:
    global _conn  # noqa: PLW0603 - one lazily opened connection per worker process
    deadline = time.monotonic() + RETRY_FOR_SECONDS
    while True:
        try:
            with _lock:
                if _conn is None or _conn.closed:
                    _conn = _connect()
                _conn.execute(
                    "INSERT INTO public.ledger (exec_id, run_id, step_slug, task_index, attempt,"
                    " pid, note) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (exec_id) DO NOTHING",
                    (exec_id, ctx.run_id, ctx.step_slug, ctx.task_index, ctx.attempt,
                     os.getpid(), note))
            return
        except psycopg.OperationalError:
            with _lock:
                if _conn is not None:
                    _conn.close()
                _conn = None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def record(ctx: Context, note: str | None = None) -> None:
    """Record one execution (from a plain `def` handler)."""
    _insert(uuid.uuid4(), ctx, note)


async def arecord(ctx: Context, note: str | None = None) -> None:
    """Record one execution (from an `async def` handler)."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(_pool, _insert, uuid.uuid4(), ctx, note)


def gate_of(value: object) -> Path | None:
    """The gate file named in a flow input, if any."""
    if isinstance(value, dict) and isinstance(value.get("gate"), str):
        return Path(value["gate"])
    return None


async def await_gate(gate: Path) -> None:
    """Block (cancellably) until the test opens the gate.

    The gate is a file another process creates, so there is no Event to wait
    on: poll it. A stat takes microseconds, harmless on the event loop."""
    while not gate.exists():  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(GATE_POLL_SECONDS)


def wait_gate(gate: Path, max_seconds: float) -> bool:
    """Block a thread until the gate opens or max_seconds pass; True if it opened."""
    deadline = time.monotonic() + max_seconds
    while not gate.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(GATE_POLL_SECONDS)
    return True


def record_soon(ctx: Context, note: str | None = None) -> None:
    """Record without waiting (from a handler that is being cancelled)."""
    _pool.submit(_insert, uuid.uuid4(), ctx, note)
