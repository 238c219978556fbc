"""`flowworker signal RUN_ID STEP`: complete a run's waiting wait step."""

from __future__ import annotations

from typing import Annotated

import typer

from flowworker.cli.common import DatabaseOpt, JsonOpt, database, print_json


def signal(
    run_id: Annotated[str, typer.Argument(help="The run's id (a UUID)", show_default=False)],
    step: Annotated[str, typer.Argument(help="The wait step's slug", show_default=False)],
    payload: Annotated[str, typer.Option(
        "--payload", help="The step's output: JSON text, @FILE for a file's, - for stdin's; "
        'a gate\'s is {"option": "approve", ...}')] = "null",
    database_url: DatabaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Signal a wait step: it completes with the payload as its output and
    the steps after it start. Signalling it again changes nothing."""
    from flowworker import client, ops
    from flowworker.cli.start import parse_input

    value = parse_input(payload, "--payload")
    parsed = ops.parse_run_id(run_id)
    with database(database_url) as conn, ops.mapped_errors(conn):
        result = client.signal(conn, parsed, step, value)
    if as_json:
        print_json({"run_id": str(parsed), "step_slug": step, "result": result})
    elif result == "signalled":
        typer.echo(f"step {step} of run {parsed} signalled")
    else:
        typer.echo(f"step {step} of run {parsed} was signalled before: nothing changed")
