"""The invariants of the state machine (I1-I7 of docs/reliability.md),
checked in one place for every tier: the SQL tier after its scenarios
(tests/sql/helpers.py assert_invariants), the worker tiers after every test
(the `invariants` fixture, tests/support/worker_fixtures.py).

Each query returns the rows that break an invariant; none is fine. I4's
"one applied completion per task" is also read from the workers' logs
(tests/acceptance/harness.py check_worker_logs).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

# Over the whole database.
QUERIES = {
    "I2 step remaining_tasks/initial_tasks differ from its task rows": """
        SELECT ss.run_id, ss.step_slug, ss.status, ss.remaining_tasks, ss.initial_tasks,
               c.total, c.unfinished
        FROM flowworker.step_states ss
        CROSS JOIN LATERAL (
            SELECT count(*) AS total, count(*) FILTER (WHERE t.status <> 'completed') AS unfinished
            FROM flowworker.step_tasks t
            WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug) c
        WHERE (ss.remaining_tasks IS NULL AND (c.total > 0 OR ss.status = 'started'))
           OR ss.remaining_tasks <> c.unfinished
           OR (ss.initial_tasks IS NOT NULL AND ss.initial_tasks <> c.total)""",
    "I2 step remaining_deps differs from its unfinished deps": """
        SELECT ss.run_id, ss.step_slug, ss.remaining_deps, c.n
        FROM flowworker.step_states ss
        CROSS JOIN LATERAL (
            SELECT count(*) AS n FROM flowworker.deps d
            JOIN flowworker.step_states ds ON ds.run_id = ss.run_id AND ds.step_slug = d.dep_slug
            WHERE d.flow_slug = ss.flow_slug AND d.step_slug = ss.step_slug
              AND ds.status <> 'completed') c
        WHERE ss.remaining_deps <> c.n""",
    "I2 run remaining_steps differs from its unfinished steps": """
        SELECT r.run_id, r.status, r.remaining_steps, c.n
        FROM flowworker.runs r
        CROSS JOIN LATERAL (
            SELECT count(*) AS n FROM flowworker.step_states ss
            WHERE ss.run_id = r.run_id AND ss.status <> 'completed') c
        WHERE r.remaining_steps <> c.n""",
    "I2 completed step with unfinished tasks": """
        SELECT ss.run_id, ss.step_slug FROM flowworker.step_states ss
        WHERE ss.status = 'completed' AND EXISTS (
            SELECT 1 FROM flowworker.step_tasks t
            WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug
              AND t.status <> 'completed')""",
    "I2 completed run with unfinished steps": """
        SELECT r.run_id FROM flowworker.runs r WHERE r.status = 'completed' AND EXISTS (
            SELECT 1 FROM flowworker.step_states ss
            WHERE ss.run_id = r.run_id AND ss.status <> 'completed')""",
    "I2 finished run with a task or step still to do": """
        SELECT r.run_id, r.status FROM flowworker.runs r
        WHERE r.status NOT IN ('started', 'paused') AND (
            EXISTS (SELECT 1 FROM flowworker.step_tasks t
                    WHERE t.run_id = r.run_id AND t.status IN ('queued', 'started'))
         OR EXISTS (SELECT 1 FROM flowworker.step_states ss
                    WHERE ss.run_id = r.run_id
                      AND ss.status IN ('created', 'started', 'waiting')))""",
    "I4 completed single step whose output is not its task's output": """
        SELECT ss.run_id, ss.step_slug FROM flowworker.step_states ss
        JOIN flowworker.steps s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
        JOIN flowworker.step_tasks t ON t.run_id = ss.run_id AND t.step_slug = ss.step_slug
        WHERE ss.status = 'completed' AND s.step_type = 'single'
          AND ss.output IS DISTINCT FROM t.output""",
    "I4 completed map step whose output is not its tasks' outputs in order": """
        SELECT ss.run_id, ss.step_slug FROM flowworker.step_states ss
        JOIN flowworker.steps s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
        WHERE ss.status = 'completed' AND s.step_type = 'map'
          AND ss.output IS DISTINCT FROM (
              SELECT coalesce(jsonb_agg(t.output ORDER BY t.task_index), '[]'::jsonb)
              FROM flowworker.step_tasks t
              WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug)""",
    "I4 completed task without completed_at": """
        SELECT t.run_id, t.step_slug, t.task_index FROM flowworker.step_tasks t
        WHERE t.status = 'completed' AND t.completed_at IS NULL""",
    # Attempts go on counting after retry_run, which gives max_attempts more.
    "I6 attempts_count > max_attempts": """
        SELECT t.run_id, t.step_slug, t.task_index, t.attempts_count, t.attempts_base,
               coalesce(s.max_attempts, f.max_attempts)
        FROM flowworker.step_tasks t
        JOIN flowworker.steps s ON s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
        JOIN flowworker.flows f ON f.flow_slug = t.flow_slug
        WHERE t.attempts_count - t.attempts_base > coalesce(s.max_attempts, f.max_attempts)""",
}

# Per flow, over its queue: {queue} is the queue table, %(flow)s the flow's slug.
QUEUE_QUERIES = {
    # A paused run waits for resume_run; a waiting step for its signal.
    "I3 unfinished run with no message, no claim and no waiting step": """
        SELECT r.run_id FROM flowworker.runs r
        WHERE r.flow_slug = %(flow)s AND r.status = 'started' AND NOT EXISTS (
            SELECT 1 FROM flowworker.step_tasks t JOIN {queue} m ON m.msg_id = t.message_id
            WHERE t.run_id = r.run_id AND t.status IN ('queued', 'started'))
          AND NOT EXISTS (SELECT 1 FROM flowworker.step_states ss
                          WHERE ss.run_id = r.run_id AND ss.status = 'waiting')""",
    "I3 unfinished task without its message": """
        SELECT t.run_id, t.step_slug, t.task_index, t.status FROM flowworker.step_tasks t
        WHERE t.flow_slug = %(flow)s AND t.status IN ('queued', 'started')
          AND NOT EXISTS (SELECT 1 FROM {queue} m WHERE m.msg_id = t.message_id)""",
    # Visible or not: a finished task's message is archived with the transition.
    "I5 message left for a finished task": """
        SELECT t.run_id, t.step_slug, t.task_index, t.status, m.msg_id, m.vt <= now() AS visible
        FROM {queue} m JOIN flowworker.step_tasks t
          ON t.message_id = m.msg_id AND t.flow_slug = %(flow)s
        WHERE t.status NOT IN ('queued', 'started')""",
}

# I1 holds only while workers run: nothing re-claims an expired claim in the
# SQL tier, where tests expire claims on purpose (tests/sql/helpers.py expire).
EXPIRED_CLAIMS = {
    "I1 task started past its claim deadline + grace": """
        SELECT t.run_id, t.step_slug, t.task_index, t.attempts_count, m.vt
        FROM flowworker.step_tasks t LEFT JOIN {queue} m ON m.msg_id = t.message_id
        WHERE t.flow_slug = %(flow)s AND t.status = 'started'
          AND (m.msg_id IS NULL OR m.vt < now() - make_interval(secs => %(grace)s))""",
}

SHOWN = 10  # rows shown per broken invariant


def check_invariants(conn: psycopg.Connection, flows: Iterable[str] | None = None, *,
                     grace_seconds: float | None = 5.0) -> list[str]:
    """I1-I6 over the database; the violations, none when all hold.

    flows: whose queues to check (default: every flow). grace_seconds: how
    long past its deadline a claim may stay unclaimed (I1); None skips I1,
    for a database no worker serves."""
    problems: list[str] = []
    for label, query in QUERIES.items():
        problems += _rows(conn, label, query)
    if flows is None:
        flows = [row[0] for row in conn.execute("SELECT flow_slug FROM flowworker.flows")]
    queries = {**QUEUE_QUERIES, **(EXPIRED_CLAIMS if grace_seconds is not None else {})}
    for flow in flows:
        queue = sql.Identifier("flowworker", "q_" + flow)
        params = {"flow": flow, "grace": grace_seconds}
        for label, template in queries.items():
            problems += _rows(conn, f"{label} [{flow}]",
                              sql.SQL(template).format(queue=queue), params)
    return sorted(problems)


def _rows(conn: psycopg.Connection, label: str, query: sql.Composed | str,
          params: Mapping[str, Any] | None = None) -> list[str]:
    rows = conn.execute(query, params).fetchall()
    return [f"{label}: {row}" for row in rows[:SHOWN]] + (
        [f"{label}: ... and {len(rows) - SHOWN} more"] if len(rows) > SHOWN else [])


class IdleInTransactionSampler:
    """I7: samples pg_stat_activity of one database in a thread while a test
    runs, and remembers every backend seen `idle in transaction` for more
    than `limit` seconds. Survives the database going away and coming back."""

    def __init__(self, database_url: str, *, limit: float = 1.0, every: float = 0.25) -> None:
        self.database_url = database_url
        self.limit = limit
        self.every = every
        self.seen: dict[int, tuple[Any, ...]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="i7-sampler", daemon=True)

    def __enter__(self) -> IdleInTransactionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=2,
                                           application_name="flowworker_test_i7")
                self.sample(conn)
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
            self._stop.wait(self.every)
        if conn is not None:
            conn.close()

    def sample(self, conn: psycopg.Connection) -> None:
        rows = conn.execute(
            "SELECT pid, application_name, state, now() - state_change, left(query, 200)"
            " FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%%'"
            " AND now() - state_change > make_interval(secs => %s)", (self.limit,)).fetchall()
        for row in rows:
            self.seen.setdefault(int(row[0]), row)

    def problems(self) -> list[str]:
        return [f"I7 backend idle in transaction > {self.limit} s: {row}"
                for row in self.seen.values()]
