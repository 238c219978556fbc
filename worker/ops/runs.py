"""Runs: a filtered page of them, newest first, and one run in detail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import class_row

from flowworker.errors import InvalidInputError, UnknownFlowError, UnknownRunError
from flowworker.ops.db import fetch, fetch_one
from flowworker.ops.models import (
    RUN_STATUSES,
    RunDetail,
    RunEvent,
    RunSummary,
    StepDetail,
    TaskCounts,
)

MAX_LIMIT = 10_000
EVENTS_SHOWN = 200  # a run's newest events; a poison map step can write thousands


@dataclass(frozen=True)
class RunFilter:
    """Which runs to list. `before` continues a page: the (started_at,
    run_id) of the last run of the previous one."""

    flow: str | None = None
    status: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None
    limit: int = 50
    before: tuple[datetime, UUID] | None = None


def parse_run_id(value: str) -> UUID:
    """A run id as typed; InvalidInputError (exit 2) when it is not a UUID."""
    try:
        return UUID(value.strip())
    except ValueError:
        raise InvalidInputError(f"invalid run id {value!r}: not a UUID") from None


def list_runs(conn: psycopg.Connection[Any], where: RunFilter) -> list[RunSummary]:
    """Newest first. An unknown flow (UnknownFlowError) or status
    (InvalidInputError) is an error, not an empty page: a typo must not read
    as "no runs"."""
    if not 1 <= where.limit <= MAX_LIMIT:
        raise InvalidInputError(f"limit must be 1..{MAX_LIMIT}, not {where.limit}")
    if where.status is not None and where.status not in RUN_STATUSES:
        raise InvalidInputError(f"unknown run status {where.status!r}; "
                                f"one of {', '.join(RUN_STATUSES)}")
    if where.flow is not None and not fetch_one(conn, "ops_flow_exists", {"flow": where.flow})[0]:
        raise UnknownFlowError(f"flow {where.flow!r} does not exist")
    before_started, before_run_id = where.before or (None, None)
    params = {"flow": where.flow, "status": where.status, "limit": where.limit,
              "started_after": where.started_after, "started_before": where.started_before,
              "before_started": before_started, "before_run_id": before_run_id}
    return fetch(conn, "ops_list_runs", params, class_row(RunSummary))


def show_run(conn: psycopg.Connection[Any], run_id: UUID,
             events_limit: int = EVENTS_SHOWN) -> RunDetail:
    """The run, each step of its flow with its state and tasks, the flow's
    edges (each step's depends_on) and the run's newest events;
    UnknownRunError when none."""
    found = fetch(conn, "ops_run", {"run_id": run_id})
    if not found:
        raise UnknownRunError(f"run {run_id} does not exist")
    *summary, run_input, output, remaining = found[0]
    run = RunSummary(*summary)
    deps: dict[str, list[str]] = {}
    for dep, step in fetch(conn, "ops_flow_edges", {"flow": run.flow_slug}):
        deps.setdefault(step, []).append(dep)
    steps = [_step(row, deps.get(row[0], [])) for row in
             fetch(conn, "ops_run_steps", {"run_id": run_id})]
    events = fetch(conn, "ops_run_events", {"run_id": run_id, "limit": events_limit},
                   class_row(RunEvent))
    return RunDetail(run, run_input, output, int(remaining), steps, events)


def _step(row: tuple[Any, ...], depends_on: list[str]) -> StepDetail:
    slug, step_type, status, started, ended, duration, error = row[:7]
    total, queued, started_n, completed, failed, cancelled, attempts = (int(n) for n in row[7:])
    return StepDetail(slug, step_type, status, started, ended, duration, error,
                      TaskCounts(total, queued, started_n, completed, failed, cancelled),
                      attempts, depends_on)
