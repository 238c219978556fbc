"""The dashboard's Starlette app: routes, the pool's lifetime, error pages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flowworker.dashboard import pages, posts
from flowworker.dashboard.config import DashboardConfig
from flowworker.dashboard.web import HERE, Web
from flowworker.errors import (
    ConfigurationError,
    DatabaseUnreachableError,
    FlowworkerError,
    InvalidInputError,
    SchemaError,
    UnknownFlowError,
    UnknownRunError,
)

# What each error of flowworker's tree answers with; the page says its message.
ERROR_STATUS: tuple[tuple[type[FlowworkerError], int, str], ...] = (
    (UnknownRunError, 404, "No such run"),
    (UnknownFlowError, 404, "No such flow"),
    (InvalidInputError, 400, "Bad request"),
    (ConfigurationError, 400, "Bad request"),
    (DatabaseUnreachableError, 503, "Database unreachable"),
    (SchemaError, 503, "Schema missing or outdated"),
    (FlowworkerError, 500, "The database refused"),
)


def create_app(config: DashboardConfig) -> Starlette:
    web = Web(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        web.pool.open(wait=False)
        try:
            yield
        finally:
            web.pool.close()

    routes = [
        Route("/", pages.overview),
        Route("/runs", pages.runs),
        Route("/runs/{run_id}", pages.run),
        Route("/runs/{run_id}/{action}", posts.run_action, methods=["POST"]),
        Route("/flows", pages.flows),
        Route("/flows/{flow}/{action}", posts.flow_action, methods=["POST"]),
        Route("/workers", pages.workers),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(config.allowed_hosts))],
        exception_handlers={FlowworkerError: _flowworker_error, HTTPException: _http_error,
                            posts.ForbiddenError: _forbidden})
    app.state.web = web
    return app


async def _flowworker_error(request: Request, exc: Exception) -> Response:
    web: Web = request.app.state.web
    for kind, status, title in ERROR_STATUS:
        if isinstance(exc, kind):
            return web.error(request, status, title, str(exc))
    raise exc  # unreachable: FlowworkerError is the last row


async def _http_error(request: Request, exc: Exception) -> Response:
    web: Web = request.app.state.web
    assert isinstance(exc, HTTPException)
    title = "Not found" if exc.status_code == 404 else "Request refused"
    return web.error(request, exc.status_code, title, str(exc.detail))


async def _forbidden(request: Request, exc: Exception) -> Response:
    web: Web = request.app.state.web
    return web.error(request, 403, "Forbidden", str(exc))
