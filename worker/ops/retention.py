"""Retention: what flowworker.prune would delete, and calling it until done.

prune() deletes one batch per call and commits it before the next, so no
lock outlives a batch; the connection must be in autocommit mode (inside a
caller's transaction every batch would wait for that one commit).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg

from flowworker.ops.db import fetch_one
from flowworker.ops.models import PrunePreview, PruneResult

# Runs per transaction. Measured (docs/performance.md, "Retention"): batches
# of 100 prune as fast as batches of 1,000, and hold each lock and WAL flush
# a tenth as long, so the workers' commits beside them wait less.
DEFAULT_BATCH_SIZE = 100
DEFAULT_REST = 1.0


def preview(conn: psycopg.Connection[Any], older_than: timedelta) -> PrunePreview:
    """What prune(older_than) would delete if called now (it reads every
    run that ended before the cutoff: about a second per million)."""
    cutoff, runs, workers = fetch_one(conn, "ops_prune_preview", {"older_than": older_than})
    return PrunePreview(older_than.total_seconds(), cutoff,
                        {status: int(n) for status, n in sorted(runs.items())}, int(workers))


def may_prune(conn: psycopg.Connection[Any]) -> bool:
    """Whether this role may call flowworker.prune (today the schema's owner only)."""
    return bool(fetch_one(conn, "may_prune")[0])


def prune(conn: psycopg.Connection[Any], older_than: timedelta,
          batch_size: int = DEFAULT_BATCH_SIZE, rest: float = DEFAULT_REST,
          on_batch: Callable[[int], None] | None = None) -> PruneResult:
    """Call flowworker.prune until it deletes nothing; on_batch(deleted)
    after each call that deleted something. After each batch, wait `rest`
    times as long as it took: at 1, the database spends at most half its
    time on the prune, which keeps the workers' claims quick beside it."""
    if not conn.autocommit:
        raise ValueError("prune needs an autocommit connection: each batch commits")
    began = time.monotonic()
    deleted = batches = 0
    longest = 0.0
    while True:
        batch_began = time.monotonic()
        count = prune_batch(conn, older_than, batch_size)
        took = time.monotonic() - batch_began
        batches += 1
        longest = max(longest, took)
        if not count:
            return PruneResult(deleted, batches, time.monotonic() - began, longest)
        deleted += count
        if on_batch is not None:
            on_batch(count)
        time.sleep(rest * took)


def prune_batch(conn: psycopg.Connection[Any], older_than: timedelta, batch_size: int) -> int:
    """One call of flowworker.prune: rows of runs and workers deleted, 0 when done."""
    (count,) = fetch_one(conn, "ops_prune", {"older_than": older_than, "batch_size": batch_size})
    return int(count)
