"""`flowworker healthcheck`: exit 0 when the database and schema are fine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowworker.cli.common import DatabaseOpt, JsonOpt, print_json

if TYPE_CHECKING:
    from flowworker.ops.models import Health


def healthcheck(database_url: DatabaseOpt = None, as_json: JsonOpt = False) -> None:
    """Exit 0 if the database answers and its schema fits; else 3 (unreachable) or 4 (schema)."""
    import typer

    from flowworker import ops
    from flowworker.settings import load_settings

    settings = load_settings(database_url=database_url)
    report = ops.health(settings.database_url)
    if as_json:
        print_json(report)
    elif report.ok:
        typer.echo(f"ok: database reachable, schema version {report.schema_version}")
    raise_unhealthy(report)


def raise_unhealthy(report: Health) -> None:
    """The error (and so the exit code: 3 unreachable, 4 schema) of a
    report that is not ok."""
    from flowworker.errors import DatabaseUnreachableError, FlowworkerError, SchemaError

    if not report.ok:
        kind = {3: DatabaseUnreachableError, 4: SchemaError}.get(report.exit_code,
                                                                   FlowworkerError)
        raise kind(report.problem)
