"""What every page handler shares: the pool (each read in a worker thread,
on a connection of its own), rendering with the CSRF cookie and the
security headers, and the error pages."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import jinja2
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from flowworker.dashboard.config import DashboardConfig
from flowworker.dashboard.csrf import COOKIE, FIELD, CsrfTokens
from flowworker.dashboard.dag import state_class
from flowworker.errors import DatabaseUnreachableError

T = TypeVar("T")
HERE = Path(__file__).parent
SECURITY_HEADERS = {
    # Everything the pages load is theirs: no inline script can run even if
    # escaping failed somewhere, and no other site may frame the buttons.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["state_class"] = state_class
    env.filters["detail_text"] = detail_text
    return Jinja2Templates(env=env)


def detail_text(detail: Any) -> str:
    """An event's detail as a person reads it: `key: value` lines, text
    as it is (an error's own line breaks), anything else as JSON."""
    if not isinstance(detail, dict):
        return json.dumps(detail, ensure_ascii=False)
    return "\n".join(f"{key}: {value if isinstance(value, str) else json.dumps(value)}"
                     for key, value in detail.items())


class Web:
    """The app's state: its configuration, pool, templates and tokens."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.pool = ConnectionPool(config.database_url, min_size=1, max_size=config.pool_size,
                                   kwargs={"autocommit": True, "connect_timeout": 10},
                                   open=False, name="flowworker-dashboard")
        self.templates = templates()
        self.tokens = CsrfTokens()

    async def read(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """work(conn) in a worker thread on a pooled connection."""
        return await run_in_threadpool(self._with_connection, work)

    def _with_connection(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        try:
            with self.pool.connection(timeout=10) as conn:
                return work(conn)
        except PoolTimeout:
            raise DatabaseUnreachableError(
                "database unreachable: no connection within 10 s") from None

    def render(self, request: Request, name: str, context: dict[str, Any],
               status_code: int = 200) -> Response:
        cookie = request.cookies.get(COOKIE)
        token = cookie if cookie and self.tokens.valid(cookie) else self.tokens.new()
        page = {"config": self.config, "csrf_field": FIELD, "csrf_token": token,
                "message": None, "message_kind": "info", **context}
        response = self.templates.TemplateResponse(request, name, page, status_code)
        if token != cookie:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        response.headers.update(SECURITY_HEADERS)
        return response

    def error(self, request: Request, status_code: int, title: str, message: str) -> Response:
        return self.render(request, "error.html", {"title": title, "message": message,
                                                   "status_code": status_code}, status_code)
