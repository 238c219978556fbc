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

DEFAULT_BATCH_SIZE = 1000


def preview(conn: psycopg.Connection[Any], older_than: timedelta) -> PrunePreview:
    """What prune(older_than) would delete if called now (it reads every
    run that ended before the cutoff: about a second per million)."""
    cutoff, runs, workers = fetch_one(conn, "ops_prune_preview", {"older_than": older_than})
    return PrunePreview(older_than.total_seconds(), cutoff,
                        {status: int(n) for status, n in sorted(runs.items())}, int(workers))


def prune(conn: psycopg.Connection[Any], older_than: timedelta,
          batch_size: int = DEFAULT_BATCH_SIZE,
          on_batch: Callable[[int], None] | None = None) -> PruneResult:
    """Call flowworker.prune until it deletes nothing; on_batch(deleted)
    after each call that deleted something."""
    if not conn.autocommit:
        raise ValueError("prune needs an autocommit connection: each batch commits")
    began = time.monotonic()
    deleted = batches = 0
    while True:
        (count,) = fetch_one(conn, "ops_prune", {"older_than": older_than,
                                                 "batch_size": batch_size})
        batches += 1
        if not count:
            return PruneResult(deleted, batches, time.monotonic() - began)
        deleted += int(count)
        if on_batch is not None:
            on_batch(int(count))
