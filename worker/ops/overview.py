"""Flows, their queues and runs at a glance, and the workers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row

from flowworker.ops.db import database_now, fetch, fetch_composed, queue_query
from flowworker.ops.models import (
    COUNTED_RUN_STATUSES,
    FlowInfo,
    FlowStatus,
    QueueDepth,
    Status,
    WorkerInfo,
)

# A worker heartbeats every 5 s by default; one silent for a minute is
# gone (killed, frozen, or cut off from the database).
LOST_AFTER = timedelta(seconds=60)
COMPLETED_WINDOW = timedelta(hours=1)
COMPLETED_CAP = 100_000


def queue_depth(conn: psycopg.Connection[Any], flow_slug: str) -> QueueDepth:
    depth, visible, oldest = fetch_composed(conn, queue_query(flow_slug))
    return QueueDepth(int(depth), int(visible), None if oldest is None else float(oldest))


def flows(conn: psycopg.Connection[Any]) -> list[FlowInfo]:
    """Every flow defined in the database, with its options and queue."""
    return [FlowInfo(slug, int(steps), max_attempts, base_delay, timeout, created,
                     queue_depth(conn, slug), paused_at)
            for slug, max_attempts, base_delay, timeout, created, steps, paused_at
            in fetch(conn, "ops_flows")]


def status(conn: psycopg.Connection[Any], window: timedelta = COMPLETED_WINDOW,
           cap: int = COMPLETED_CAP, lost_after: timedelta = LOST_AFTER) -> Status:
    """Per flow: runs by status (exact for all but completed), completed
    runs among those started within `window` (counted up to `cap`), the
    queue, live workers. Reads indexes, so it stays fast on millions of runs."""
    now = database_now(conn)
    counts: dict[str, dict[str, int]] = {}
    for slug, run_status, n in fetch(conn, "ops_runs_by_status"):
        counts.setdefault(slug, {})[run_status] = int(n)
    completed = dict(fetch(conn, "ops_completed_recently", {"window": window, "cap": cap}))
    live = dict(fetch(conn, "ops_live_workers", {"lost_after": lost_after}))
    result = []
    for slug in sorted(completed):
        runs = dict.fromkeys(COUNTED_RUN_STATUSES, 0) | counts.get(slug, {})
        done = int(completed[slug])
        result.append(FlowStatus(slug, runs, done, done >= cap, queue_depth(conn, slug),
                                 int(live.get(slug, 0))))
    return Status(now, window.total_seconds(), cap, result)


def workers(conn: psycopg.Connection[Any], limit: int = 100,
            lost_after: timedelta = LOST_AFTER) -> list[WorkerInfo]:
    """Workers not stopped first (live, then lost), then stopped ones, newest
    heartbeat first; at most `limit`."""
    return fetch(conn, "ops_workers", {"limit": limit, "lost_after": lost_after},
                 class_row(WorkerInfo))
