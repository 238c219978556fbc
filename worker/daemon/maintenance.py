"""Side jobs of a running worker: heartbeats and queue gauges, the deadline
sweep, the finished-run watch, signals, --drain and --prune-after. Each runs
until cancelled and takes only what it uses; an unexpected error in any of
them stops the worker loudly."""

from __future__ import annotations

import logging
import random
import signal
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from uuid import UUID

import anyio

from flowworker import logs, metrics
from flowworker.daemon.db_asyncpg import Queries, is_retryable
from flowworker.daemon.inflight import InFlight
from flowworker.daemon.shutdown import Shutdown
from flowworker.errors import ConfigurationError

RUN_WATCH_INTERVAL = 0.5  # seconds between checks for cancelled/failed runs in flight
DRAIN_CHECK_INTERVAL = 0.1
TIMEOUT_TICK = 0.05  # seconds: a handler is cancelled at most this long after its timeout
PRUNE_INTERVAL = 300.0  # seconds between --prune-after rounds (jittered by a fifth)
PRUNE_BATCH = 100  # runs per batch, each its own transaction: short locks and WAL flushes
PRUNE_REST = 1.0  # after a batch, wait as long as it took: the database prunes half the time


async def heartbeat(db: Queries, worker_ids: Mapping[str, UUID], interval: float) -> None:
    """Keep the worker rows alive and the queue gauges current."""
    while True:
        try:
            for worker_id in worker_ids.values():
                await db.fetchval("heartbeat_worker", worker_id)
            for slug in worker_ids:
                row = (await db.fetch("queue_metrics", slug))[0]
                metrics.QUEUE_DEPTH.labels(slug).set(row["queue_length"])
                metrics.QUEUE_OLDEST_AGE.labels(slug).set(row["oldest_msg_age_seconds"])
        except Exception as exc:
            if not is_retryable(exc):
                raise
            metrics.DB_RECONNECTS.inc()
            logs.event("worker.heartbeat_missed", error=type(exc).__name__)
        await anyio.sleep(interval)


async def sweep_deadlines(inflight: InFlight) -> None:
    """Cancel the handlers that ran past their task's timeout."""
    while True:
        await anyio.sleep(TIMEOUT_TICK)
        inflight.expire_overdue(time.monotonic())


async def watch_runs(db: Queries, inflight: InFlight) -> None:
    """Cancel handlers whose run was cancelled or failed meanwhile."""
    while True:
        await anyio.sleep(RUN_WATCH_INTERVAL)
        run_ids = list(inflight.run_ids())
        if not run_ids:
            continue
        try:
            rows = await db.fetch("finished_runs", run_ids)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            continue
        inflight.cancel_runs(row["run_id"] for row in rows)


async def signals(shutdown: Shutdown, held: Callable[[], int]) -> None:
    """First SIGTERM/SIGINT drains; a second one skips the wait."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
        async for signum in received:
            name = signal.Signals(signum).name
            if not shutdown.stopping:
                shutdown.begin(name, held())
            else:
                shutdown.hurry(name)


async def drain_watch(db: Queries, flow_slugs: list[str], inflight: InFlight,
                      producers_idle: Callable[[], bool], shutdown: Shutdown) -> None:
    """--drain: stop once nothing is held and the queues hold nothing runnable."""
    while not shutdown.stopping:
        await anyio.sleep(DRAIN_CHECK_INTERVAL)
        if len(inflight) or not producers_idle():
            continue
        try:
            depth = 0
            for slug in flow_slugs:
                depth += await _runnable(db, slug)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            continue
        if depth == 0 and not len(inflight):
            shutdown.begin("drained", 0)


async def _runnable(db: Queries, slug: str) -> int:
    """Messages that a worker will claim some day: not those of a paused run
    or a paused flow (they wait for resume, which --drain does not)."""
    if await db.fetchval("flow_paused", slug):
        return 0
    row = (await db.fetch("queue_metrics", slug))[0]
    return int(row["queue_length"] - row["paused_length"])


async def loop_lag(interval: float = 0.25, warn_after: float = 0.5) -> None:
    """Measure how late the event loop wakes us; a blocking handler shows here."""
    while True:
        began = anyio.current_time()
        await anyio.sleep(interval)
        lag = anyio.current_time() - began - interval
        metrics.LOOP_LAG.observe(max(lag, 0.0))
        if lag > warn_after:
            logs.event("loop.lag", logging.WARNING, lag_ms=round(lag * 1000),
                       hint="a handler blocks the event loop")


async def prune(db: Queries, older_than: timedelta, interval: float = PRUNE_INTERVAL,
                batch_size: int = PRUNE_BATCH) -> None:
    """--prune-after: a round at once, then every `interval` seconds or so:
    delete what ended longer ago than older_than, a batch at a time, while
    no other worker is pruning (prune_batch's lock)."""
    if not await db.fetchval("may_prune"):
        raise ConfigurationError("--prune-after: this database role may not execute "
                                 "flowworker.prune; only the schema's owner may")
    while True:
        await prune_round(db, older_than, batch_size)
        await anyio.sleep(interval * random.uniform(0.8, 1.2))  # noqa: S311 - spreads workers


async def prune_round(db: Queries, older_than: timedelta, batch_size: int,
                      rest: float = PRUNE_REST) -> int:
    """Batches until none is left, another worker prunes, or the database is
    away (the next round goes on); how many rows of runs and workers went.
    After each batch it waits `rest` times as long as the batch took."""
    began, deleted = time.monotonic(), 0
    while True:
        batch_began = time.monotonic()
        try:
            count = await db.fetchval("prune_batch", older_than, batch_size)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            logs.event("prune.interrupted", error=type(exc).__name__)
            break
        if not count:  # 0: nothing is left; None: another worker is pruning
            break
        deleted += count
        await anyio.sleep(rest * (time.monotonic() - batch_began))
    if deleted:
        logs.event("prune.done", deleted=deleted,
                   duration_ms=round((time.monotonic() - began) * 1000))
    return deleted
