"""What a worker checks and records before it claims anything, and takes
back on the way out: the schema and each flow's shape, the worker rows,
and readiness for /readyz."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from uuid import UUID

import anyio

from flowworker import logs
from flowworker.daemon.db_asyncpg import Queries
from flowworker.daemon.health import ReadyCheck
from flowworker.daemon.listener import Listener
from flowworker.dsl import Flow
from flowworker.errors import SchemaError, ShapeMismatchError
from flowworker.schema import incompatibility
from flowworker.shape import shape_difference


async def schema_problem(db: Queries) -> str | None:
    """Why a worker of this code cannot run against the database's schema."""
    version = await db.fetchval("schema_version")
    if version < 2:  # before min_worker_version existed
        return incompatibility(version, 1)
    return incompatibility(version, await db.fetchval("min_worker_version"))


async def check_database(db: Queries, flows: list[Flow]) -> int:
    """Refuse a missing or incompatible schema, or a flow of another shape;
    the largest output the database takes, in bytes."""
    if not await db.fetchval("schema_present"):
        raise SchemaError("flowworker schema is not installed; run `flowworker migrate`")
    problem = await schema_problem(db)
    if problem:
        raise SchemaError(problem)
    for flow in flows:
        difference = shape_difference(flow, await db.fetch("flow_shape", flow.slug))
        if difference:
            raise ShapeMismatchError(difference)
    return int(await db.fetchval("max_output_bytes"))


async def register(db: Queries, worker_ids: Mapping[str, UUID]) -> list[UUID]:
    """One worker row per flow, each logged; the ids registered (to mark
    stopped later)."""
    registered = []
    for slug, worker_id in worker_ids.items():
        await db.fetchval("register_worker", worker_id, slug, socket.gethostname(), os.getpid())
        registered.append(worker_id)
        # One event per worker row: the flow and its worker_id side by side.
        logs.event("worker.started", flow=slug, worker_id=str(worker_id), pid=os.getpid())
    return registered


async def unregister(db: Queries, registered: list[UUID], patience: float) -> None:
    """Mark the worker rows stopped, best effort and within patience seconds."""
    with anyio.move_on_after(patience):
        for worker_id in registered:
            try:
                await db.fetchval("stop_worker", worker_id)
            except Exception as exc:  # best effort on the way out
                logs.event("worker.unregister_failed", error=type(exc).__name__)


def readiness(db: Queries, listener: Listener | None) -> ReadyCheck:
    """/readyz: the database answers, the schema fits, the listener is up."""
    async def not_ready() -> str | None:
        try:
            with anyio.fail_after(2):
                problem = await schema_problem(db)
        except Exception as exc:  # any failure means not ready
            return f"database: {type(exc).__name__}"
        if problem:
            return problem
        if listener is not None and listener.available and not listener.up:
            return "listener down"
        return None
    return not_ready
