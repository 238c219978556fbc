"""`flowworker status`: every flow at a glance."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from flowworker.cli.common import DatabaseOpt, JsonOpt, database, duration_option, emit

if TYPE_CHECKING:
    from flowworker.ops.models import Status


def status(
    database_url: DatabaseOpt = None,
    window: Annotated[str, typer.Option(
        "--window", help="Count the completed runs among those started this recently")] = "1h",
    as_json: JsonOpt = False,
) -> None:
    """Per flow: runs by status, recently completed runs, queue depth, live workers."""
    from flowworker import ops

    span = duration_option("--window", window)
    with database(database_url) as conn:
        report = ops.status(conn, window=span)
    emit(report, as_json, lambda: _print(report))


def _print(report: Status) -> None:
    from flowworker.cli import render
    from flowworker.durations import format_duration
    from flowworker.ops.models import COUNTED_RUN_STATUSES

    first = {s: i for i, s in enumerate(COUNTED_RUN_STATUSES)}
    statuses = sorted({s for f in report.flows for s in f.runs},
                      key=lambda s: (first.get(s, len(first)), s))
    done = f"completed ({format_duration(timedelta(seconds=report.window_seconds))})"
    columns = ["flow", *statuses, done, "queued", "ready", "oldest ready", "workers"]
    rows = []
    for flow in report.flows:
        completed = render.count(flow.completed_recently) + ("+" if flow.completed_capped else "")
        rows.append([flow.flow_slug, *(render.count(flow.runs.get(s, 0)) for s in statuses),
                     completed, render.count(flow.queue.depth), render.count(flow.queue.visible),
                     render.seconds(flow.queue.oldest_visible_seconds),
                     render.count(flow.live_workers)])
    render.print_table(render.console(), columns, rows, right=columns[1:],
                       empty="no flows defined; apply some with `flowworker migrate --dir`")
