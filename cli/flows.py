"""`flowworker flows list|pause|resume`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from flowworker.cli.common import DatabaseOpt, JsonOpt, database, emit

if TYPE_CHECKING:
    from flowworker.ops.models import FlowInfo

app = typer.Typer(name="flows", help="The flows defined in the database; pause and resume "
                  "them.", no_args_is_help=True)

FlowArg = Annotated[str, typer.Argument(help="The flow's slug", show_default=False)]


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
               "oldest ready", "defined", "paused"]
    rows = [[f.flow_slug, str(f.steps), str(f.max_attempts), f"{f.base_delay} s",
             f"{f.timeout} s", render.count(f.queue.depth), render.count(f.queue.visible),
             render.seconds(f.queue.oldest_visible_seconds), render.when(f.created_at),
             render.when(f.paused_at)]
            for f in flows]
    render.print_table(render.console(), columns, rows, right=columns[1:8],
                       empty="no flows defined; apply some with `flowworker migrate --dir`")


@app.command("pause")
def pause(flow: FlowArg, database_url: DatabaseOpt = None) -> None:
    """Claim none of the flow's tasks until it is resumed; runs may still start."""
    _steer(flow, database_url, pausing=True)


@app.command("resume")
def resume(flow: FlowArg, database_url: DatabaseOpt = None) -> None:
    """Claim the flow's tasks again."""
    _steer(flow, database_url, pausing=False)


def _steer(flow: str, database_url: str | None, pausing: bool) -> None:
    from flowworker import client, ops

    with database(database_url) as conn, ops.mapped_errors(conn):
        (client.pause_flow if pausing else client.resume_flow)(conn, flow)
    typer.echo(f"flow {flow} {'paused' if pausing else 'resumed'}")
