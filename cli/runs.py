"""`flowworker runs list|show|cancel|retry|pause|resume`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import typer

from flowworker.cli.common import (
    DatabaseOpt,
    JsonOpt,
    database,
    emit,
    moment_option,
    print_json,
)

if TYPE_CHECKING:
    from rich.text import Text

    from flowworker.client import Run
    from flowworker.ops.models import RunSummary

app = typer.Typer(name="runs", help="List, inspect and steer runs.", no_args_is_help=True)

RunIdArg = Annotated[str, typer.Argument(help="The run's id (a UUID)", show_default=False)]


@app.command("list")
def list_(
    flow: Annotated[str | None, typer.Option("--flow", help="Only this flow")] = None,
    status: Annotated[str | None, typer.Option(
        "--status", help="Only runs in this status (started, paused, completed, failed, "
        "cancelled)")
    ] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Started at or after: a duration ago (2h) or an ISO 8601 time")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Started before: a duration ago (2h) or an ISO 8601 time")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first")] = 50,
    database_url: DatabaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Runs, newest first."""
    from flowworker import ops

    with database(database_url) as conn:
        now = ops.database_now(conn)
        where = ops.RunFilter(
            flow=flow, status=status, limit=limit,
            started_after=None if since is None else moment_option("--since", since, now),
            started_before=None if until is None else moment_option("--until", until, now))
        runs = ops.list_runs(conn, where)
    emit({"runs": runs}, as_json, lambda: _print_list(runs))


def _print_list(runs: list[RunSummary]) -> None:
    from flowworker.cli import render

    rows: list[list[str | Text]] = [
        [str(r.run_id), r.flow_slug, render.state(r.status), render.when(r.started_at),
         render.seconds(r.duration_seconds), render.first_line(r.error_message)]
        for r in runs]
    render.print_table(render.console(), ["run_id", "flow", "status", "started", "took",
                                          "error"], rows, right=["took"], empty="no runs")


@app.command("show")
def show(run_id: RunIdArg, database_url: DatabaseOpt = None, as_json: JsonOpt = False) -> None:
    """One run: its DAG with each step's state, attempts, duration and last error."""
    from flowworker import ops
    from flowworker.cli.dag import print_run

    parsed = ops.parse_run_id(run_id)
    with database(database_url) as conn:
        detail = ops.show_run(conn, parsed)
    emit(detail, as_json, lambda: print_run(detail))


@app.command("cancel")
def cancel(run_id: RunIdArg, reason: Annotated[str | None, typer.Option(
        "--reason", help="Kept on the run and in its history")] = None,
        database_url: DatabaseOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel a run that has not ended; one that has is left as it is."""
    from flowworker import client, ops

    parsed = ops.parse_run_id(run_id)
    with database(database_url) as conn, ops.mapped_errors(conn):
        before = client.get_run(conn, parsed)
        run = client.cancel_run(conn, parsed, reason)
    changed = before is not None and before.status != run.status
    _report(run, "cancelled", changed, as_json)


@app.command("retry")
def retry(run_id: RunIdArg, database_url: DatabaseOpt = None, as_json: JsonOpt = False) -> None:
    """Start a failed or cancelled run again from where it stopped: its
    completed steps keep their outputs."""
    _steer("retry", run_id, database_url, as_json)


@app.command("pause")
def pause(run_id: RunIdArg, database_url: DatabaseOpt = None, as_json: JsonOpt = False) -> None:
    """Claim nothing more of a run until it is resumed (running tasks finish)."""
    _steer("pause", run_id, database_url, as_json)


@app.command("resume")
def resume(run_id: RunIdArg, database_url: DatabaseOpt = None, as_json: JsonOpt = False) -> None:
    """Go on with a paused run exactly where it stopped."""
    _steer("resume", run_id, database_url, as_json)


_DONE = {"retry": "retried", "pause": "paused", "resume": "resumed"}


def _steer(action: Literal["retry", "pause", "resume"], run_id: str,
           database_url: str | None, as_json: bool) -> None:
    """One of the client's run actions; a run in a status the action does not
    apply to is one line naming its status, exit 1 (RunStateError)."""
    from flowworker import client, ops

    act = {"retry": client.retry_run, "pause": client.pause_run,
           "resume": client.resume_run}[action]
    parsed = ops.parse_run_id(run_id)
    with database(database_url) as conn, ops.mapped_errors(conn):
        before = client.get_run(conn, parsed)
        run = act(conn, parsed)
    # Pausing a paused run or resuming a started one changes nothing: say so.
    _report(run, _DONE[action], before is not None and before.status != run.status, as_json)


def _report(run: Run, done: str, changed: bool, as_json: bool) -> None:
    if as_json:
        print_json({"run_id": run.run_id, "status": run.status, done: changed})
    elif changed:
        now = "" if run.status == done else f" (now {run.status})"
        typer.echo(f"run {run.run_id} {done}{now}")
    else:
        typer.echo(f"run {run.run_id} is {run.status}: not {done}")
