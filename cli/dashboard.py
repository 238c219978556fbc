"""`flowworker dashboard`: the web dashboard (the `dashboard` extra)."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated

import typer

from flowworker.cli.common import DatabaseOpt, settings_for
from flowworker.errors import ConfigurationError

EXTRA_MISSING = "the dashboard needs its extra: pip install 'flowworker[dashboard]'"


def dashboard(
    bind: Annotated[str, typer.Option(
        "--bind", metavar="HOST:PORT", help="Address and TCP port to listen on")
    ] = "127.0.0.1:8080",
    allow_actions: Annotated[bool, typer.Option(
        "--allow-actions", help="Show and take cancel/retry/pause/resume/signal (POST, CSRF)")
    ] = False,
    show_payloads: Annotated[bool, typer.Option(
        "--show-payloads", help="Show run inputs and outputs (hidden by default)")] = False,
    database_url: DatabaseOpt = None,
) -> None:
    """Serve the web dashboard: overview, runs, a run's DAG, flows, workers."""
    try:
        import uvicorn

        from flowworker.dashboard.app import create_app
    except ImportError:
        raise ConfigurationError(EXTRA_MISSING) from None
    from flowworker import ops
    from flowworker.cli.healthcheck import raise_unhealthy
    from flowworker.dashboard.config import DashboardConfig, hosts_for

    host, port = parse_bind(bind)
    settings = settings_for(database_url=database_url)
    raise_unhealthy(ops.health(settings.database_url))  # exit 3 or 4 now, not on each page
    config = DashboardConfig(settings.database_url, allow_actions=allow_actions,
                             show_payloads=show_payloads, allowed_hosts=hosts_for(host))
    typer.echo(f"flowworker dashboard on http://{host}:{port} "
               f"(actions {'on' if allow_actions else 'off'})", err=True)
    # uvicorn shuts down on SIGTERM/SIGINT, then raises the signal again
    # with the handlers it found: these, so a stop is exit 0, not death by
    # the signal (or `interrupted`, exit 1).
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _stopped)
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning",
                server_header=False)


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def parse_bind(bind: str) -> tuple[str, int]:
    """`127.0.0.1:8080`, `[::1]:8080` or `localhost:8080`; exit 2 otherwise."""
    host, _, port_text = bind.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"--bind {bind!r}: not HOST:PORT with a TCP port (1-65535)")
    return host, int(port_text)
