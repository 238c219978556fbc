"""Helpers of the run-lifecycle fault rows (R1-R5, docs/reliability.md): a
flow with a wait step, runs brought to a given point, and a snapshot of
everything a run owns, to show that a refused call changed nothing."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql

from tests.sql.helpers import claim, complete, queue_table, start


def define_wait(conn: psycopg.Connection, flow: str, *, timeout: int | None = None,
                options: list[str] | None = None, fail_on: list[str] | None = None,
                max_attempts: int = 3) -> None:
    """a -> hook (a wait step) -> b"""
    conn.execute("SELECT flowworker.create_flow(%s, %s, 0, 60)", (flow, max_attempts))
    conn.execute("SELECT flowworker.add_step(%s, 'a')", (flow,))
    conn.execute("SELECT flowworker.add_step(%s, 'hook', deps => '{a}', step_type => 'wait', "
                 "timeout => %s, options => %s, fail_on => %s)", (flow, timeout, options, fail_on))
    conn.execute("SELECT flowworker.add_step(%s, 'b', deps => '{hook}')", (flow,))


def waiting_runs(conn: psycopg.Connection, flow: str, n: int) -> list[uuid.UUID]:
    """n runs of a define_wait flow whose `hook` waits."""
    run_ids = [start(conn, flow, {"i": i}) for i in range(n)]
    claims = claim(conn, flow, batch_size=n + 1)
    assert sorted(c.run_id for c in claims) == sorted(run_ids)
    for c in claims:
        assert complete(conn, c, {"a": c.run_id.hex})
    return run_ids


def wait_token(conn: psycopg.Connection, run_id: uuid.UUID, step: str = "hook") -> uuid.UUID:
    row = conn.execute("SELECT wait_token FROM flowworker.step_states "
                       "WHERE run_id = %s AND step_slug = %s", (run_id, step)).fetchone()
    assert row is not None, f"{run_id} has no step {step}"
    assert row[0] is not None, f"{step} of {run_id} does not wait"
    token: uuid.UUID = row[0]
    return token


def deadline_msg(conn: psycopg.Connection, run_id: uuid.UUID, step: str = "hook") -> int:
    """The message of a wait step's deadline (its one task)."""
    row = conn.execute("SELECT message_id FROM flowworker.step_tasks "
                       "WHERE run_id = %s AND step_slug = %s", (run_id, step)).fetchone()
    assert row is not None, f"{step} of {run_id} has no deadline"
    msg_id: int = row[0]
    return msg_id


def snapshot(conn: psycopg.Connection, flow: str, run_id: uuid.UUID) -> dict[str, Any]:
    """Every row the run owns, as text: equal snapshots, nothing changed."""
    tables: dict[str, sql.SQL | sql.Composed] = {
        "runs": sql.SQL("SELECT to_jsonb(x)::text FROM flowworker.runs x WHERE run_id = %s"),
        "steps": sql.SQL("SELECT to_jsonb(x)::text FROM flowworker.step_states x "
                         "WHERE run_id = %s ORDER BY step_slug"),
        "tasks": sql.SQL("SELECT to_jsonb(x)::text FROM flowworker.step_tasks x "
                         "WHERE run_id = %s ORDER BY step_slug, task_index"),
        "events": sql.SQL("SELECT to_jsonb(x)::text FROM flowworker.events x "
                          "WHERE run_id = %s ORDER BY event_id"),
        "queue": sql.SQL("SELECT to_jsonb(q)::text FROM {} q JOIN flowworker.step_tasks t "
                         "ON t.message_id = q.msg_id AND t.flow_slug = %s "
                         "WHERE t.run_id = %s ORDER BY q.msg_id").format(queue_table(flow)),
    }
    out: dict[str, Any] = {}
    for name, query in tables.items():
        params = (flow, run_id) if name == "queue" else (run_id,)
        out[name] = [row[0] for row in conn.execute(query, params).fetchall()]
    return out
