"""The action endpoints: `POST /runs/<run_id>/<action>` (cancel, retry,
pause, resume, signal) and `POST /flows/<flow>/<action>` (pause, resume).
Each is refused (403) unless the dashboard runs with --allow-actions and
the form carries this process's CSRF token, the one in its cookie."""

from __future__ import annotations

from typing import Any

import psycopg
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from flowworker.dashboard import actions
from flowworker.dashboard.csrf import COOKIE, FIELD
from flowworker.dashboard.pages import read_run, render_run, run_id_of
from flowworker.dashboard.web import Web


class ForbiddenError(Exception):
    """An action the dashboard does not take: actions are off, or the CSRF
    token is missing or not ours."""


async def checked_form(request: Request) -> FormData:
    web: Web = request.app.state.web
    if not web.config.allow_actions:
        raise ForbiddenError("actions are off: start the dashboard with --allow-actions")
    form = await request.form()
    field = form.get(FIELD)
    if not web.tokens.accepts(request.cookies.get(COOKIE),
                              field if isinstance(field, str) else None):
        raise ForbiddenError("missing or invalid CSRF token: reload the page and try again")
    return form


async def run_action(request: Request) -> Response:
    form = await checked_form(request)
    web: Web = request.app.state.web
    run_id = run_id_of(request)
    name = request.path_params["action"]
    if name == actions.SIGNAL.name:
        action = actions.SIGNAL
    elif name in actions.RUN_ACTIONS:
        action = actions.RUN_ACTIONS[name]
    else:
        return web.error(request, 404, "Not found", f"no run action {name!r}")
    params: dict[str, Any] = {"run_id": run_id}
    if action is actions.SIGNAL:
        params["step_slug"] = str(form.get("step_slug", ""))
        params["payload"] = None

    def act(conn: psycopg.Connection[Any]) -> None:
        if action is actions.SIGNAL:
            params["payload"] = actions.parse_payload(str(form.get("payload", "")))
        actions.perform(conn, action, params)

    try:
        await web.read(act)
    except actions.ActionRefusedError as refused:
        page = await web.read(lambda conn: read_run(conn, run_id))
        return render_run(request, page, f"{name}: {refused}", "error", refused.status)
    return RedirectResponse(f"/runs/{run_id}?done={name}", status_code=303)


async def flow_action(request: Request) -> Response:
    await checked_form(request)
    web: Web = request.app.state.web
    flow, name = request.path_params["flow"], request.path_params["action"]
    action = actions.FLOW_ACTIONS.get(name)
    if action is None:
        return web.error(request, 404, "Not found", f"no flow action {name!r}")
    try:
        await web.read(lambda conn: actions.perform(conn, action, {"flow": flow}))
    except actions.ActionRefusedError as refused:
        return web.error(request, refused.status, f"{name} {flow}: refused", str(refused))
    return RedirectResponse(f"/flows?done={name}", status_code=303)
