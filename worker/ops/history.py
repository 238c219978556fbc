"""A run's tasks one by one, and its history where the schema keeps one."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import class_row

from flowworker.ops.db import fetch, fetch_one
from flowworker.ops.models import RunEvent, TaskDetail

# A map step may have thousands of tasks and a run a long history: a page
# shows the first this many of each.
MAX_ROWS = 1000


def run_tasks(conn: psycopg.Connection[Any], run_id: UUID,
              limit: int = MAX_ROWS) -> list[TaskDetail]:
    """The run's tasks in step definition order, then by index."""
    return fetch(conn, "ops_run_tasks", {"run_id": run_id, "limit": limit},
                 class_row(TaskDetail))


def has_events(conn: psycopg.Connection[Any]) -> bool:
    """Whether this database's schema has flowworker.events (run history)."""
    return bool(fetch_one(conn, "ops_has_events")[0])


def run_events(conn: psycopg.Connection[Any], run_id: UUID,
               limit: int = MAX_ROWS) -> list[RunEvent] | None:
    """The run's history, oldest first; None when the schema keeps none."""
    if not has_events(conn):
        return None
    return fetch(conn, "ops_run_events", {"run_id": run_id, "limit": limit},
                 class_row(RunEvent))
