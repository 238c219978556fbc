"""`flowworker workers list`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from flowworker.cli.common import DatabaseOpt, JsonOpt, database, emit

if TYPE_CHECKING:
    from rich.text import Text

    from flowworker.ops.models import WorkerInfo

app = typer.Typer(name="workers", help="Worker processes, by flow.", no_args_is_help=True)


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option("--limit", help="At most this many")] = 100,
    database_url: DatabaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Workers: live ones first, then lost (silent for a minute), then stopped."""
    from flowworker import ops
    from flowworker.errors import ConfigurationError

    if not 1 <= limit <= 10_000:
        raise ConfigurationError(f"--limit must be 1..10000, not {limit}")
    with database(database_url) as conn:
        workers = ops.workers(conn, limit=limit)
    emit({"workers": workers}, as_json, lambda: _print(workers))


def _print(workers: list[WorkerInfo]) -> None:
    from flowworker.cli import render

    rows: list[list[str | Text]] = [
        [str(w.worker_id), w.flow_slug, render.state(w.state), w.hostname, str(w.pid),
         render.when(w.started_at), render.seconds(w.heartbeat_age_seconds) + " ago",
         render.when(w.stopped_at)]
        for w in workers]
    columns = ["worker_id", "flow", "state", "host", "pid", "started", "last heartbeat",
               "stopped"]
    render.print_table(render.console(), columns, rows, right=["pid", "last heartbeat"],
                       empty="no workers")
