"""Aged history for the retention measurements, written by SQL.

`python -m bench.prune` seeds a million runs with it; the prune tests in
`make test` seed a few thousand. The flow `aged` has two steps, `fetch` and
`split` (a map over fetch's two-element output), so a run has 2 step states
and 3 tasks. Of the runs that ended: 94 % completed (no messages left, as a
worker leaves them), 5 % failed (split's task 0 failed after 3 attempts, task
1 cancelled) and 1 % cancelled (split's tasks cancelled); both kinds keep
split's two messages in the archive `a_aged`, as `fail_task` and
`cancel_run` leave them. Runs still going keep their split messages queued
in `q_aged`. Task i's message ids are 3i, 3i+1 and 3i+2. Each run has the
events the SQL functions would have written (run.started, its end, and a
failed run's three task.failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import psycopg

FLOW = "aged"

DEFINE = """
SELECT flowworker.create_flow('aged', max_attempts => 3);
SELECT flowworker.add_step('aged', 'fetch');
SELECT flowworker.add_step('aged', 'split', ARRAY['fetch'], step_type => 'map');
"""

# %(first)s..%(last)s: run numbers; started %(age)s ago, %(spacing)s apart,
# each ending 2 s after it started. %(going)s: the runs are still going.
RUNS = """
INSERT INTO flowworker.runs (run_id, flow_slug, status, input, output, error_message,
                             remaining_steps, started_at, completed_at, failed_at, cancelled_at)
SELECT md5('aged' || i)::uuid, 'aged', k.status, '{}',
       CASE WHEN k.status = 'completed' THEN '{"split": [1, 2]}'::jsonb END,
       CASE WHEN k.status = 'failed' THEN 'boom' END,
       CASE WHEN k.status = 'completed' THEN 0 ELSE 1 END,
       k.at, CASE WHEN k.status = 'completed' THEN k.at + interval '2 s' END,
       CASE WHEN k.status = 'failed' THEN k.at + interval '2 s' END,
       CASE WHEN k.status = 'cancelled' THEN k.at + interval '2 s' END
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
CROSS JOIN LATERAL (SELECT
    CASE WHEN %(going)s THEN 'started' WHEN i %% 100 < 94 THEN 'completed'
         WHEN i %% 100 < 99 THEN 'failed' ELSE 'cancelled' END AS status,
    now() - %(age)s::interval + (i - %(first)s) * %(spacing)s::interval AS at) AS k;

INSERT INTO flowworker.step_states (run_id, step_slug, flow_slug, status, remaining_deps,
                                    remaining_tasks, initial_tasks, output, error_message,
                                    created_at, started_at, completed_at, failed_at)
SELECT r.run_id, s.step_slug, 'aged',
       CASE WHEN s.step_slug = 'fetch' THEN 'completed'
            WHEN r.status = 'failed' THEN 'failed'
            ELSE r.status END,
       0, CASE WHEN s.step_slug = 'fetch' OR r.status = 'completed' THEN 0 ELSE 2 END,
       CASE WHEN s.step_slug = 'fetch' THEN 1 ELSE 2 END,
       CASE WHEN s.step_slug = 'fetch' THEN '[1, 2]'::jsonb
            WHEN r.status = 'completed' THEN '[1, 2]'::jsonb END,
       CASE WHEN s.step_slug = 'split' AND r.status = 'failed' THEN 'boom' END,
       r.started_at, r.started_at + interval '1 s',
       CASE WHEN s.step_slug = 'fetch' THEN r.started_at + interval '1 s' ELSE r.completed_at END,
       CASE WHEN s.step_slug = 'split' THEN r.failed_at END
FROM flowworker.runs r
CROSS JOIN (VALUES ('fetch'), ('split')) AS s(step_slug)
WHERE r.run_id IN (SELECT md5('aged' || i)::uuid
                   FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i);

INSERT INTO flowworker.step_tasks (run_id, step_slug, task_index, flow_slug, status,
                                   attempts_count, message_id, output, error_message,
                                   queued_at, started_at, completed_at, failed_at)
SELECT r.run_id, t.step_slug, t.task_index, 'aged',
       CASE WHEN t.step_slug = 'fetch' THEN 'completed'
            WHEN r.status = 'failed' AND t.task_index = 0 THEN 'failed'
            WHEN r.status = 'failed' THEN 'cancelled'
            WHEN r.status = 'started' THEN 'queued'
            ELSE r.status END,
       CASE WHEN r.status = 'failed' AND t.step_slug = 'split' AND t.task_index = 0 THEN 3
            WHEN r.status IN ('started', 'cancelled') AND t.step_slug = 'split' THEN 0
            ELSE 1 END,
       3 * r.n + t.offs,
       CASE WHEN t.step_slug = 'fetch' THEN '[1, 2]'::jsonb
            WHEN r.status = 'completed' THEN to_jsonb(t.task_index + 1) END,
       CASE WHEN r.status = 'failed' AND t.step_slug = 'split' AND t.task_index = 0
            THEN 'boom' END,
       r.started_at, r.started_at + interval '1 s',
       CASE WHEN t.step_slug = 'fetch' OR r.status = 'completed'
            THEN r.started_at + interval '1 s' END,
       CASE WHEN r.status = 'failed' AND t.step_slug = 'split' AND t.task_index = 0
            THEN r.failed_at END
FROM (SELECT i AS n, x.* FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
      JOIN flowworker.runs x ON x.run_id = md5('aged' || i)::uuid) AS r
CROSS JOIN (VALUES ('fetch', 0, 0), ('split', 0, 1), ('split', 1, 2))
    AS t(step_slug, task_index, offs);

-- The history the SQL functions write: every run started, how each ended
-- (run.failed with the step and its error) and each failed attempt of a
-- failed run; that is, 2 events for most runs, 5 for a failed one.
INSERT INTO flowworker.events (run_id, step_slug, task_index, attempt, event, detail, actor, at)
SELECT r.run_id, e.step_slug, e.task_index, e.attempt, e.event, e.detail, 'bench', e.at
FROM flowworker.runs r
CROSS JOIN LATERAL (
    SELECT NULL::text AS step_slug, NULL::int AS task_index, NULL::int AS attempt,
           'run.started' AS event, NULL::jsonb AS detail, r.started_at AS at
    UNION ALL
    SELECT CASE WHEN r.status = 'failed' THEN 'split' END, NULL, NULL, 'run.' || r.status,
           CASE WHEN r.status = 'failed' THEN '{"error": "boom"}'::jsonb END,
           coalesce(r.completed_at, r.failed_at, r.cancelled_at)
    WHERE r.status <> 'started'
    UNION ALL
    SELECT 'split', 0, a, 'task.failed', '{"error": "boom"}'::jsonb,
           r.started_at + a * interval '0.5 s'
    FROM generate_series(1, 3) AS a
    WHERE r.status = 'failed'
) AS e
WHERE r.run_id IN (SELECT md5('aged' || i)::uuid
                   FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i);

INSERT INTO flowworker.a_aged (msg_id, read_ct, enqueued_at, vt, message, archived_at)
SELECT t.message_id, t.attempts_count, t.queued_at, t.queued_at, jsonb_build_object(
           'run_id', t.run_id, 'step_slug', t.step_slug, 'task_index', t.task_index),
       coalesce(t.failed_at, t.queued_at)
FROM flowworker.step_tasks t
WHERE t.flow_slug = 'aged' AND t.status IN ('failed', 'cancelled')
  AND t.message_id BETWEEN 3 * %(first)s AND 3 * %(last)s + 2;

INSERT INTO flowworker.q_aged (msg_id, read_ct, enqueued_at, vt, message)
SELECT t.message_id, 0, t.queued_at, now() + interval '1 day', jsonb_build_object(
           'run_id', t.run_id, 'step_slug', t.step_slug, 'task_index', t.task_index)
FROM flowworker.step_tasks t
WHERE t.flow_slug = 'aged' AND t.status = 'queued'
  AND t.message_id BETWEEN 3 * %(first)s AND 3 * %(last)s + 2;

SELECT setval('flowworker."q_aged$seq"', greatest(3 * %(last)s + 3,
              (SELECT last_value FROM flowworker."q_aged$seq")));
"""

# Rows the prune must have left nothing of: rows that point at a run, a
# step state or a task that is gone (the foreign keys forbid the first two;
# messages have none).
ORPHANS = """
SELECT (SELECT count(*) FROM flowworker.step_states ss
        WHERE NOT EXISTS (SELECT 1 FROM flowworker.runs r WHERE r.run_id = ss.run_id))
     + (SELECT count(*) FROM flowworker.step_tasks t
        WHERE NOT EXISTS (SELECT 1 FROM flowworker.step_states ss
                          WHERE ss.run_id = t.run_id AND ss.step_slug = t.step_slug))
     + (SELECT count(*) FROM flowworker.a_aged a
        WHERE NOT EXISTS (SELECT 1 FROM flowworker.step_tasks t
                          WHERE t.flow_slug = 'aged' AND t.message_id = a.msg_id))
     + (SELECT count(*) FROM flowworker.q_aged q
        WHERE NOT EXISTS (SELECT 1 FROM flowworker.step_tasks t
                          WHERE t.flow_slug = 'aged' AND t.message_id = q.msg_id))
     + (SELECT count(*) FROM flowworker.events e
        WHERE NOT EXISTS (SELECT 1 FROM flowworker.runs r WHERE r.run_id = e.run_id))
"""


@dataclass(frozen=True)
class Seeded:
    """What seed() wrote: runs by kind."""

    old_ended: int  # ended before the cutoff: prune deletes them
    old_going: int  # started before the cutoff, still going: never touched
    recent_ended: int  # ended after the cutoff: kept


def define(conn: psycopg.Connection) -> None:
    conn.execute(DEFINE)


def add_runs(conn: psycopg.Connection, first: int, last: int, age: timedelta,
             spacing: timedelta, *, going: bool = False) -> None:
    """Runs number first..last (inclusive), the first started `age` ago."""
    params = {"first": first, "last": last, "age": age, "spacing": spacing, "going": going}
    for statement in RUNS.split(";\n\n"):  # one statement per call: they take parameters
        conn.execute(statement, params)


def seed(conn: psycopg.Connection, old_ended: int, old_going: int, recent_ended: int,
         chunk: int = 100_000) -> Seeded:
    """The flow and its runs: old_ended runs that ended 8 to 38 days ago,
    old_going runs started 30 days ago and still going, recent_ended runs
    that ended within the last hour. Written chunk runs per statement."""
    define(conn)
    span = timedelta(days=30) / max(old_ended, 1)
    for first in range(0, old_ended, chunk):
        last = min(first + chunk, old_ended) - 1
        add_runs(conn, first, last, timedelta(days=38) - first * span, span)
    n = old_ended
    add_runs(conn, n, n + old_going - 1, timedelta(days=30), timedelta(seconds=1), going=True)
    n += old_going
    add_runs(conn, n, n + recent_ended - 1, timedelta(minutes=50), timedelta(milliseconds=10))
    return Seeded(old_ended, old_going, recent_ended)


def orphans(conn: psycopg.Connection) -> int:
    row = conn.execute(ORPHANS).fetchone()
    assert row is not None
    return int(row[0])
