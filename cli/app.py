"""`flowworker`: run workers, compile flows, install the schema, operate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer vendors click

from flowworker.cli import (
    common,
    dashboard,
    flows,
    healthcheck,
    prune,
    runs,
    start,
    status,
    workers,
)
from flowworker.cli.common import DatabaseOpt, settings_for
from flowworker.cli.signal import signal as signal_step
from flowworker.errors import (
    ConfigurationError,
    DatabaseRefusedError,
    DatabaseUnreachableError,
    FlowworkerError,
)
from flowworker.settings import database_url_origin, unknown_variables

# rich_markup_mode=None: plain help, where "[env: ...]" and "[notify]" are
# text (rich markup took them for tags and dropped them) and a flag such as
# --drain shows no value.
app = typer.Typer(
    name="flowworker", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Durable DAG workflows on PostgreSQL.",
)

AppOpt = Annotated[str | None, typer.Option(
    "--app", metavar="MODULE", help="Module that defines the flows, with dots: myapp.flows "
    "[env: FLOWWORKER_APP]")]


def warn_about_unknown_variables() -> None:
    for text in unknown_variables():
        sys.stderr.write(f"flowworker: warning: {text}\n")


@app.command()
def run(
    flow: Annotated[list[str] | None, typer.Option(
        "--flow", metavar="SLUG", help="A flow to serve (repeatable); without --flow the "
        "worker serves every flow of the app [env: FLOWWORKER_FLOWS, comma-separated]")] = None,
    app_module: AppOpt = None,
    database_url: DatabaseOpt = None,
    concurrency: Annotated[int | None, typer.Option(
        metavar="N", help="Tasks run at once [10]")] = None,
    batch_size: Annotated[int | None, typer.Option(
        metavar="N", help="Most tasks per claim [10]")] = None,
    signal: Annotated[str | None, typer.Option(
        metavar="notify|poll", help="How the worker learns of new tasks [notify]")] = None,
    poll_min_interval: Annotated[float | None, typer.Option(
        metavar="SECONDS", help="Shortest wait between empty polls [0.05]")] = None,
    poll_max_interval: Annotated[float | None, typer.Option(
        metavar="SECONDS", help="Longest wait between polls [1.0]")] = None,
    shutdown_timeout: Annotated[float | None, typer.Option(
        metavar="SECONDS", help="Time running handlers get after SIGTERM [30]")] = None,
    metrics_addr: Annotated[str | None, typer.Option(
        metavar="HOST:PORT", help="/metrics, /healthz and /readyz, or off; one port per "
        "worker on a host [127.0.0.1:9108]")] = None,
    drain: Annotated[bool, typer.Option(
        "--drain", help="Exit 0 once the flows have no runnable work left")] = False,
    log_format: Annotated[str | None, typer.Option(
        metavar="auto|human|json", help="human on a terminal, JSON lines otherwise [auto]")] = None,
    prune_after: Annotated[str | None, typer.Option(
        metavar="DURATION", help="Prune what ended longer ago than this (14d), one worker "
        "at a time [off]")] = None,
) -> None:
    """Run a worker until SIGTERM/SIGINT (or --drain).

    It serves the flows named by --flow, or every flow the app defines. Each
    option has a FLOWWORKER_* variable (FLOWWORKER_CONCURRENCY, ...); the
    README's table of settings lists them all, and those without a flag.
    """
    from flowworker.registry import load_flows

    settings = settings_for(
        flows=flow or None, app=app_module, database_url=database_url,
        concurrency=concurrency, batch_size=batch_size, signal=signal,
        poll_min_interval=poll_min_interval, poll_max_interval=poll_max_interval,
        shutdown_timeout=shutdown_timeout, metrics_addr=metrics_addr,
        drain=drain or None, log_format=log_format, prune_after=prune_after,
    )
    load_flows(settings.app)  # a missing or broken --app fails here with exit 2
    from flowworker.daemon.runtime import run_worker

    run_worker(settings)


@app.command("compile")
def compile_(
    app_module: AppOpt = None,
    flow: Annotated[list[str] | None, typer.Option("--flow", help="Only this flow")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write one file per flow here")] = None,
) -> None:
    """Print (or write) the SQL that defines the app's flows.

    With --out, each flow is compared with its newest file there first: a
    changed shape (steps added or removed, deps or step types changed) is
    explained with a warning, since a flow with runs cannot change shape in
    place; changed options are applied in place by migrate.
    """
    from flowworker.compiler import compile_flow, explain_change, latest_flow_file, write_flow_file
    from flowworker.registry import load_flows, select_flows

    settings = settings_for(app=app_module)
    warn_about_unknown_variables()
    flows = select_flows(load_flows(settings.app), flow)
    for item in flows:
        if out is None:
            sys.stdout.write(compile_flow(item))
            continue
        previous = latest_flow_file(item.slug, out) if out.is_dir() else None
        path = write_flow_file(item, out)
        if path is None:
            typer.echo(f"{item.slug}: unchanged", err=True)
            continue
        warning, text = explain_change(item, previous) if previous else (False, "")
        if text:
            typer.echo(f"flowworker: warning: {text}" if warning else text, err=True)
        unless = f" (delete it if {item.slug!r} has runs: migrate would refuse it)"
        typer.echo(f"wrote {path}{unless if warning else ''}", err=True)


@app.command()
def schema(
    since: Annotated[int | None, typer.Option(
        "--since", help="Print the migrations after this schema version instead")] = None,
) -> None:
    """Print the core schema SQL (for Alembic, Flyway or sqitch users)."""
    from flowworker.schema import migrations, schema_sql, schema_version

    if since is None:
        sys.stdout.write(schema_sql())
        return
    if not 1 <= since <= schema_version():
        raise ConfigurationError(
            f"--since {since}: schema versions run from 1 to {schema_version()}")
    for migration in migrations():
        if migration.version > since:
            sys.stdout.write(migration.sql)


@app.command()
def migrate(
    database_url: DatabaseOpt = None,
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="Also apply the compiled flow files in this folder")] = None,
    lock_timeout: Annotated[float | None, typer.Option(
        "--lock-timeout", help="Seconds to wait for the migrate lock "
        "[env: FLOWWORKER_MIGRATE_LOCK_TIMEOUT] [60]")] = None,
) -> None:
    """Install or upgrade the core schema, then apply compiled flows.

    Each flow file is applied once, in name order, and recorded with its
    checksum (flowworker.flow_files); a file applied before is skipped, and
    one edited since is refused.
    """
    from flowworker.migrator import migrate as run_migrate

    settings = settings_for(database_url=database_url, migrate_lock_timeout=lock_timeout)
    warn_about_unknown_variables()
    if directory is not None and not directory.is_dir():
        raise ConfigurationError(f"--dir {directory}: not a folder")
    for line in run_migrate(settings.database_url, directory, settings.migrate_lock_timeout):
        typer.echo(line, err=True)
    typer.echo("schema is current", err=True)


# The operator commands (flowworker.cli.*, on flowworker.ops).
app.command("start")(start.start)
app.command("status")(status.status)
app.add_typer(runs.app)
app.command("signal")(signal_step)
app.add_typer(flows.app)
app.add_typer(workers.app)
app.command("healthcheck")(healthcheck.healthcheck)
app.command("prune")(prune.prune)
app.command("dashboard")(dashboard.dashboard)


def fail(message: str, code: int) -> NoReturn:
    """Write one line on stderr (a multi-line message is joined) and exit."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    sys.stderr.write(f"flowworker: error: {line or 'failed'}\n")
    raise SystemExit(code)


def main() -> None:
    """Console entry point: one line on stderr and the documented exit code."""
    try:
        # A closed stdout (`... --json | head -c 10`) ends a command inside
        # typer: exit 1, nothing on stderr. Every command flushes as it writes.
        app(standalone_mode=False)
    except (DatabaseUnreachableError, DatabaseRefusedError) as exc:
        settings = common.current_settings()
        origin = database_url_origin(settings) if settings is not None else None
        fail(f"{exc}; {origin}" if origin else str(exc), exc.exit_code)
    except FlowworkerError as exc:
        fail(str(exc), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        fail("interrupted", 1)
    except NoArgsIsHelpError as exc:  # `flowworker` alone: the help, on stderr
        exc.show()
        raise SystemExit(2) from None
    except ClickException as exc:
        fail(exc.format_message(), 2)
