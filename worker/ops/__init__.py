"""What an operator reads and does, over a psycopg connection: the layer
under `flowworker status`, `runs`, `flows`, `workers`, `healthcheck` and
`prune`, for any other view of the same state (a web page) to share.

Each function runs the named queries of sql/queries/ops.sql and returns the
dataclasses of flowworker.ops.models; `jsonable` turns them into the JSON
documents the commands print with --json. Errors are flowworker's: an
unknown run or flow (exit 1), bad input (2), a lost database (3), a missing
schema (4).
"""

from flowworker.ops.db import database_now, mapped_errors
from flowworker.ops.health import health
from flowworker.ops.history import run_tasks
from flowworker.ops.jsonable import jsonable
from flowworker.ops.overview import flows, queue_depth, status, workers
from flowworker.ops.retention import may_prune, preview, prune
from flowworker.ops.runs import RunFilter, list_runs, parse_run_id, show_run

__all__ = [
    "RunFilter",
    "database_now",
    "flows",
    "health",
    "jsonable",
    "list_runs",
    "mapped_errors",
    "may_prune",
    "parse_run_id",
    "preview",
    "prune",
    "queue_depth",
    "run_tasks",
    "show_run",
    "status",
    "workers",
]
