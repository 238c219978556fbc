"""Shared helpers for the SQL tests: drive the worker protocol through the
real functions and read back what the state machine wrote."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.support.invariants import check_invariants

WORKER = uuid.UUID("00000000-0000-4000-8000-000000000001")


@dataclass(frozen=True)
class Claim:
    """One row of flowworker.start_tasks."""

    msg_id: int
    run_id: uuid.UUID
    step_slug: str
    task_index: int
    attempt: int
    input: Any
    flow_input: Any  # None for a root single step (its input is the flow input)
    fetch_flow_input: bool
    timeout: int
    isolated: bool = False
    waited: float = 0.0  # seconds visible before the claim
    worker: uuid.UUID = WORKER  # who holds the claim (not a column of start_tasks)


def start(conn: psycopg.Connection, flow: str, flow_input: Any = None,
          run_id: uuid.UUID | None = None) -> uuid.UUID:
    """Start a run and return its id."""
    row = conn.execute(
        "SELECT run_id FROM flowworker.start_flow(%s, %s, %s)",
        (flow, Jsonb({} if flow_input is None else flow_input), run_id),
    ).fetchone()
    assert row is not None
    run: uuid.UUID = row[0]
    return run


def claim(conn: psycopg.Connection, flow: str, batch_size: int = 10,
          worker: uuid.UUID = WORKER) -> list[Claim]:
    rows = conn.execute(
        "SELECT * FROM flowworker.start_tasks(%s, %s, %s, 5)", (flow, worker, batch_size)
    ).fetchall()
    return [replace(Claim(*row), worker=worker) for row in rows]


def complete(conn: psycopg.Connection, c: Claim, output: Any) -> bool:
    row = conn.execute(
        "SELECT flowworker.complete_task(%s, %s, %s, %s, %s, %s)",
        (c.run_id, c.step_slug, c.task_index, c.attempt, Jsonb(output), c.worker),
    ).fetchone()
    assert row is not None
    applied: bool = row[0]
    return applied


def ack(conn: psycopg.Connection, claims: list[Claim], outputs: list[Any],
        errors: list[str | None] | None = None) -> list[str]:
    """Acknowledge several claims in one ack_tasks call, as a worker does;
    an error in place of an output fails that attempt."""
    rows = conn.execute(
        "SELECT result FROM flowworker.ack_tasks(%s, %s, %s, %s, %s, %s, %s) ORDER BY ord",
        ([c.run_id for c in claims], [c.step_slug for c in claims],
         [c.task_index for c in claims], [c.attempt for c in claims],
         [Jsonb(o) for o in outputs], errors or [None] * len(claims),
         [c.worker for c in claims])).fetchall()
    return [r[0] for r in rows]


def fail(conn: psycopg.Connection, c: Claim, error: str = "boom") -> str:
    row = conn.execute(
        "SELECT flowworker.fail_task(%s, %s, %s, %s, %s, %s)",
        (c.run_id, c.step_slug, c.task_index, c.attempt, error, c.worker),
    ).fetchone()
    assert row is not None
    outcome: str = row[0]
    return outcome


def release(conn: psycopg.Connection, claims: list[Claim]) -> int:
    row = conn.execute(
        "SELECT flowworker.release_tasks(%s, %s, %s, %s, %s)",
        ([c.run_id for c in claims], [c.step_slug for c in claims],
         [c.task_index for c in claims], [c.attempt for c in claims],
         [c.worker for c in claims]),
    ).fetchone()
    assert row is not None
    released: int = row[0]
    return released


def run_row(conn: psycopg.Connection, run_id: uuid.UUID) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM flowworker.runs WHERE run_id = %s", (run_id,)).fetchone()
    assert row is not None
    return row


def step_statuses(conn: psycopg.Connection, run_id: uuid.UUID) -> dict[str, str]:
    rows = conn.execute(
        "SELECT step_slug, status FROM flowworker.step_states WHERE run_id = %s", (run_id,)
    ).fetchall()
    return dict(rows)


def step_row(conn: psycopg.Connection, run_id: uuid.UUID, step: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM flowworker.step_states WHERE run_id = %s AND step_slug = %s",
            (run_id, step),
        ).fetchone()
    assert row is not None
    return row


def tasks(conn: psycopg.Connection, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every task of a run, in (step_slug, task_index) order."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM flowworker.step_tasks WHERE run_id = %s ORDER BY step_slug, task_index",
            (run_id,),
        ).fetchall()


def queue_table(flow: str) -> sql.Identifier:
    return sql.Identifier("flowworker", f"q_{flow}")


def archive_table(flow: str) -> sql.Identifier:
    return sql.Identifier("flowworker", f"a_{flow}")


def queued_ids(conn: psycopg.Connection, flow: str) -> set[int]:
    rows = conn.execute(sql.SQL("SELECT msg_id FROM {}").format(queue_table(flow))).fetchall()
    return {r[0] for r in rows}


def archived_ids(conn: psycopg.Connection, flow: str) -> set[int]:
    rows = conn.execute(sql.SQL("SELECT msg_id FROM {}").format(archive_table(flow))).fetchall()
    return {r[0] for r in rows}


def expire(conn: psycopg.Connection, flow: str, msg_ids: list[int]) -> None:
    """Test hook for the clock: make messages visible as if their vt had passed
    (an hour ago, so that they come before anything enqueued by the test)."""
    conn.execute(
        sql.SQL("UPDATE {} SET vt = now() - interval '1 h' WHERE msg_id = ANY(%s)").format(
            queue_table(flow)),
        (msg_ids,),
    )


def vt_of(conn: psycopg.Connection, flow: str, msg_id: int) -> datetime:
    row = conn.execute(
        sql.SQL("SELECT vt FROM {} WHERE msg_id = %s").format(queue_table(flow)), (msg_id,)
    ).fetchone()
    assert row is not None, f"message {msg_id} is not in the queue"
    vt: datetime = row[0]
    return vt


def visible_in(conn: psycopg.Connection, flow: str, msg_id: int) -> float:
    """Seconds until a message becomes visible, in DB time (<= 0: visible now)."""
    row = conn.execute(
        sql.SQL("SELECT extract(epoch FROM vt - now())::float8 FROM {} WHERE msg_id = %s")
        .format(queue_table(flow)),
        (msg_id,),
    ).fetchone()
    assert row is not None, f"message {msg_id} is not in the queue"
    seconds: float = row[0]
    return seconds


def define(conn: psycopg.Connection, flow: str, steps: dict[str, list[str]],
           maps: tuple[str, ...] = (), max_attempts: int = 3, base_delay: int = 1,
           timeout: int = 60) -> None:
    """create_flow + add_step for each entry of steps (slug -> deps), in order."""
    conn.execute("SELECT flowworker.create_flow(%s, %s, %s, %s)",
                 (flow, max_attempts, base_delay, timeout))
    for step, deps in steps.items():
        conn.execute(
            "SELECT flowworker.add_step(%s, %s, deps => %s, step_type => %s)",
            (flow, step, deps, "map" if step in maps else "single"),
        )


THREADS = 8


def in_parallel(db_url: str, work: Callable[[psycopg.Connection, int], None]) -> None:
    """Run work(conn, i) in THREADS threads, each on its own connection, all
    released together; re-raise the first error any of them hit."""
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                barrier.wait(timeout=30)
                work(conn, i)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        raise errors[0]


def deadlocks(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT deadlocks FROM pg_stat_database "
                       "WHERE datname = current_database()").fetchone()
    assert row is not None
    count: int = row[0]
    return count


def assert_invariants(conn: psycopg.Connection, flow: str) -> None:
    """Fail naming every invariant of the state machine that does not hold
    (tests/support/invariants.py; not I1: no worker re-claims here)."""
    assert check_invariants(conn, [flow], grace_seconds=None) == []


def blocked_or_done(conn: psycopg.Connection, pid: int, thread: threading.Thread) -> bool:
    """The thread's statement on backend `pid` waits for a lock, or it has ended."""
    row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                       (pid,)).fetchone()
    return not thread.is_alive() or (row is not None and row[0] == "Lock")
