"""A run's tasks one by one (a map step has one per element)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import class_row

from flowworker.ops.db import fetch
from flowworker.ops.models import TaskDetail

# A map step may have thousands of tasks: a page shows the first this many.
MAX_TASKS = 1000


def run_tasks(conn: psycopg.Connection[Any], run_id: UUID,
              limit: int = MAX_TASKS) -> list[TaskDetail]:
    """The run's tasks in step definition order, then by index."""
    return fetch(conn, "ops_run_tasks", {"run_id": run_id, "limit": limit},
                 class_row(TaskDetail))
