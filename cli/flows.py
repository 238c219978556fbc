"""`flowworker flows list`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from flowworker.cli.common import DatabaseOpt, JsonOpt, database, emit

if TYPE_CHECKING:
    from flowworker.ops.models import FlowInfo

app = typer.Typer(name="flows", help="The flows defined in the database.", no_args_is_help=True)


@app.command("list")
def list_(database_url: DatabaseOpt = None, as_json: JsonOpt = False) -> None:
    """Every flow: its steps, options and queue."""
    from flowworker import ops

    with database(database_url) as conn:
        flows = ops.flows(conn)
    emit({"flows": flows}, as_json, lambda: _print(flows))


def _print(flows: list[FlowInfo]) -> None:
    from flowworker.cli import render

    columns = ["flow", "steps", "max attempts", "base delay", "timeout", "queued", "ready",
               "oldest ready", "defined"]
    rows = [[f.flow_slug, str(f.steps), str(f.max_attempts), f"{f.base_delay} s",
             f"{f.timeout} s", render.count(f.queue.depth), render.count(f.queue.visible),
             render.seconds(f.queue.oldest_visible_seconds), render.when(f.created_at)]
            for f in flows]
    render.print_table(render.console(), columns, rows, right=columns[1:8],
                       empty="no flows defined; apply some with `flowworker migrate --dir`")
