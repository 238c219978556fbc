"""`flowworker prune --older-than 7d [--dry-run]`: retention."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from flowworker.cli.common import DatabaseOpt, JsonOpt, database, duration_option, print_json

if TYPE_CHECKING:
    from flowworker.ops.models import PrunePreview, PruneResult


def prune(
    older_than: Annotated[str, typer.Option(
        "--older-than", help="Delete what ended longer ago than this (7d, 12h, 2w)",
        show_default=False)],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only count what would be deleted")] = False,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", help="Runs per transaction (fewer for flows with wide maps)")] = 100,
    rest: Annotated[float, typer.Option(
        "--rest", help="After each batch, wait this many times as long as it took (0: never)")
    ] = 1.0,
    database_url: DatabaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete runs that ended, with their steps, tasks and messages, and stopped workers."""
    from flowworker import ops
    from flowworker.errors import ConfigurationError, DatabaseError

    span = duration_option("--older-than", older_than)
    if not 1 <= batch_size <= 100_000:
        raise ConfigurationError(f"--batch-size must be 1..100000, not {batch_size}")
    if not 0 <= rest <= 100:
        raise ConfigurationError(f"--rest must be 0..100, not {rest:g}")
    with database(database_url) as conn:
        if not dry_run and not ops.may_prune(conn):
            raise DatabaseError("this database role may not execute flowworker.prune; "
                                "only the schema's owner may (--dry-run only counts)")
        found = ops.preview(conn, span)
        if not as_json:
            _print_found(older_than, found)
        done = None if dry_run else _prune(conn, span, batch_size, rest, found)
    if as_json:
        print_json(_document(older_than, found, done))
    elif done is None:
        typer.echo("dry run: nothing deleted")
    else:
        typer.echo(f"deleted {done.deleted:,} runs and workers in {done.batches:,} "
                   f"transactions ({done.seconds:.1f} s, the longest "
                   f"{done.longest_batch_seconds:.2f} s)")


def _prune(conn: Any, span: Any, batch_size: int, rest: float,
           found: PrunePreview) -> PruneResult:
    """Batches until none is left; progress on a terminal's stderr."""
    import sys

    from rich.console import Console

    from flowworker import ops

    if not sys.stderr.isatty():
        return ops.prune(conn, span, batch_size, rest)
    total = found.total_runs + found.workers
    deleted = 0
    with Console(stderr=True).status("deleting ...") as progress:
        def show(count: int) -> None:
            nonlocal deleted
            deleted += count
            progress.update(f"deleted {deleted:,} of about {total:,}")
        return ops.prune(conn, span, batch_size, rest, on_batch=show)


def _print_found(older_than: str, found: PrunePreview) -> None:
    by_status = ", ".join(f"{n:,} {status}" for status, n in found.runs.items())
    runs = f"{found.total_runs:,} runs" + (f" ({by_status})" if by_status else "")
    from flowworker.cli.render import when

    typer.echo(f"ended more than {older_than} ago (before {when(found.cutoff)}): "
               f"{runs} and {found.workers:,} workers")


def _document(older_than: str, found: PrunePreview, done: PruneResult | None) -> dict[str, Any]:
    return {"older_than": older_than, "older_than_seconds": found.older_than_seconds,
            "cutoff": found.cutoff, "dry_run": done is None,
            "found": {"runs": found.runs, "workers": found.workers},
            "deleted": None if done is None else done.deleted,
            "transactions": None if done is None else done.batches,
            "seconds": None if done is None else round(done.seconds, 3),
            "longest_transaction_seconds":
                None if done is None else round(done.longest_batch_seconds, 3)}
