"""`flowworker start FLOW`: start a run from the shell."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flowworker.cli.common import DatabaseOpt, JsonOpt, database, print_json
from flowworker.errors import ConfigurationError


def start(
    flow: Annotated[str, typer.Argument(help="The flow's slug", show_default=False)],
    input_: Annotated[str, typer.Option(
        "--input", help="The flow input: JSON text, @FILE for a file's, - for stdin's")] = "{}",
    run_id: Annotated[str | None, typer.Option(
        "--run-id", help="The run's id (a UUID): starting again with it is a no-op")] = None,
    database_url: DatabaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a run of FLOW and print its id."""
    from flowworker import client, ops

    value = parse_input(input_)
    parsed = None if run_id is None else ops.parse_run_id(run_id)
    with database(database_url) as conn, ops.mapped_errors(conn):
        run = client.start_flow(conn, flow, value, parsed)
    if as_json:
        print_json({"run_id": run.run_id, "flow_slug": run.flow_slug, "status": run.status,
                    "started_at": run.started_at})
    else:
        typer.echo(f"started run {run.run_id} of flow {run.flow_slug}")


def parse_input(option: str, flag: str = "--input") -> Any:
    """JSON from the option itself, from @FILE, or from stdin (-); exit 2
    with the parser's message when it is not JSON (NaN and Infinity are not)."""
    where, text = flag, option
    if option == "-":
        where, text = f"{flag} - (stdin)", sys.stdin.read()
    elif option.startswith("@"):
        where = f"{flag} {option}"
        try:
            text = Path(option[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{where}: cannot read it: {_reason(exc)}") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: not JSON: {exc}") from None
    except RecursionError:
        raise ConfigurationError(f"{where}: not JSON this parser takes: nested too deeply"
                                 ) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
