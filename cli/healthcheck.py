"""`flowworker healthcheck`: exit 0 when the database and schema are fine."""

from __future__ import annotations

from flowworker.cli.common import DatabaseOpt, JsonOpt, print_json


def healthcheck(database_url: DatabaseOpt = None, as_json: JsonOpt = False) -> None:
    """Exit 0 if the database answers and its schema fits; else 3 (unreachable) or 4 (schema)."""
    import typer

    from flowworker import ops
    from flowworker.errors import DatabaseUnreachableError, FlowworkerError, SchemaError
    from flowworker.settings import load_settings

    settings = load_settings(database_url=database_url)
    report = ops.health(settings.database_url)
    if as_json:
        print_json(report)
    elif report.ok:
        typer.echo(f"ok: database reachable, schema version {report.schema_version}")
    if not report.ok:
        kind = {3: DatabaseUnreachableError, 4: SchemaError}.get(report.exit_code,
                                                                   FlowworkerError)
        raise kind(report.problem)
