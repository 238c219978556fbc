"""The pages (ARCHITECTURE.md §7): `/`, `/runs`, `/runs/<run_id>`,
`/flows`, `/workers`. Each reads through flowworker.ops, in one worker
thread, and renders one template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from flowworker import ops
from flowworker.cli.common import moment_option
from flowworker.dashboard import actions, dag
from flowworker.dashboard.web import Web
from flowworker.errors import InvalidInputError, UnknownRunError
from flowworker.ops.models import RUN_STATUSES, TERMINAL_RUN_STATUSES

LIST_LIMIT = 100


def query(request: Request, name: str) -> str | None:
    """A query parameter, None when absent or blank."""
    value = request.query_params.get(name, "").strip()
    return value or None


async def overview(request: Request) -> Response:
    web: Web = request.app.state.web
    report = await web.read(ops.status)
    statuses = sorted({s for f in report.flows for s in f.runs})
    totals = {s: sum(f.runs.get(s, 0) for f in report.flows) for s in statuses}
    completed = sum(f.completed_recently for f in report.flows)
    per_minute = completed / (report.window_seconds / 60)
    return web.render(request, "overview.html", {
        "nav": "overview", "report": report, "statuses": statuses, "totals": totals,
        "completed": completed, "per_minute": per_minute})


async def runs(request: Request) -> Response:
    web: Web = request.app.state.web
    flow, status = query(request, "flow"), query(request, "status")
    since, until = query(request, "since"), query(request, "until")
    limit = _limit(query(request, "limit"))

    def read(conn: psycopg.Connection[Any]) -> tuple[list[Any], list[str]]:
        now = ops.database_now(conn)
        where = ops.RunFilter(
            flow=flow, status=status, limit=limit,
            started_after=None if since is None else moment_option("since", since, now),
            started_before=None if until is None else moment_option("until", until, now))
        return ops.list_runs(conn, where), [f.flow_slug for f in ops.flows(conn)]

    found, flow_slugs = await web.read(read)
    return web.render(request, "runs.html", {
        "nav": "runs", "runs": found, "flows": flow_slugs, "statuses": RUN_STATUSES,
        "filters": {"flow": flow, "status": status, "since": since, "until": until},
        "limit": limit})


def _limit(value: str | None) -> int:
    if value is None:
        return LIST_LIMIT
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(f"limit must be a number, not {value!r}") from None


@dataclass(frozen=True)
class RunPage:
    detail: ops.models.RunDetail
    tasks: list[ops.models.TaskDetail]
    functions: frozenset[str]


def run_id_of(request: Request) -> UUID:
    """The path's run id; a malformed one is an unknown run (404)."""
    text = request.path_params["run_id"]
    try:
        return ops.parse_run_id(text)
    except InvalidInputError:
        raise UnknownRunError(f"no run {text!r}: a run id is a UUID") from None


def read_run(conn: psycopg.Connection[Any], run_id: UUID) -> RunPage:
    detail = ops.show_run(conn, run_id)
    return RunPage(detail, ops.run_tasks(conn, run_id), actions.available(conn))


DONE = {"cancel": "Cancelled.", "retry": "Retried: its failed steps run again.",
        "pause": "Paused.", "resume": "Resumed.", "signal": "Signalled."}


async def run(request: Request) -> Response:
    web: Web = request.app.state.web
    run_id = run_id_of(request)
    page = await web.read(lambda conn: read_run(conn, run_id))
    done = DONE.get(query(request, "done") or "")
    return render_run(request, page, done, "info")


def render_run(request: Request, page: RunPage, message: str | None, kind: str,
               status_code: int = 200) -> Response:
    web: Web = request.app.state.web
    detail = page.detail
    return web.render(request, "run.html", {
        "nav": "runs", "detail": detail, "drawing": dag.layout(detail.steps),
        "tasks": page.tasks, "events": detail.events,
        "refreshing": detail.run.status not in TERMINAL_RUN_STATUSES,
        "run_actions": actions.run_actions_for(detail.run.status, page.functions),
        "waiting": [s.step_slug for s in detail.steps if s.status == "waiting"]
                   if actions.SIGNAL.function in page.functions else [],
        "message": message, "message_kind": kind}, status_code)


async def flows(request: Request) -> Response:
    web: Web = request.app.state.web

    def read(conn: psycopg.Connection[Any]) -> tuple[list[Any], frozenset[str]]:
        return ops.flows(conn), actions.available(conn)

    found, functions = await web.read(read)
    flow_actions = [a for a in actions.FLOW_ACTIONS.values() if a.function in functions]
    done = query(request, "done")
    return web.render(request, "flows.html", {
        "nav": "flows", "flows": found, "flow_actions": flow_actions,
        "message": f"Flow {done}d." if done in actions.FLOW_ACTIONS else None})


async def workers(request: Request) -> Response:
    web: Web = request.app.state.web
    found = await web.read(ops.workers)
    return web.render(request, "workers.html", {"nav": "workers", "workers": found})
