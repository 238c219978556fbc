"""Side jobs of a running worker: heartbeats, queue gauges, finished-run
watch, signals and --drain. Each runs until cancelled; an unexpected error
in any of them stops the worker loudly."""

from __future__ import annotations

import logging
import signal
import time
from typing import TYPE_CHECKING

import anyio

from flowworker import logs, metrics
from flowworker.dbpool import is_retryable
from flowworker.tasks import expire_overdue

if TYPE_CHECKING:
    from flowworker.runtime import Worker

RUN_WATCH_INTERVAL = 0.5  # seconds between checks for cancelled/failed runs in flight
DRAIN_CHECK_INTERVAL = 0.1
TIMEOUT_TICK = 0.05  # seconds: a handler is cancelled at most this long after its timeout


async def heartbeat(worker: Worker) -> None:
    """Keep the worker rows alive and the queue gauges current."""
    while True:
        try:
            for worker_id in worker.worker_ids.values():
                await worker.db.fetchval("heartbeat_worker", worker_id)
            for slug in worker.worker_ids:
                row = (await worker.db.fetch("queue_metrics", slug))[0]
                metrics.QUEUE_DEPTH.labels(slug).set(row["queue_length"])
                metrics.QUEUE_OLDEST_AGE.labels(slug).set(row["oldest_msg_age_seconds"])
        except Exception as exc:
            if not is_retryable(exc):
                raise
            logs.event("worker.heartbeat_missed", error=type(exc).__name__)
        await anyio.sleep(worker.settings.heartbeat_interval)


async def expire_handlers(worker: Worker) -> None:
    """Cancel the handlers that ran past their task's timeout."""
    while True:
        await anyio.sleep(TIMEOUT_TICK)
        expire_overdue(worker.in_flight, time.monotonic())


async def watch_runs(worker: Worker) -> None:
    """Cancel handlers whose run was cancelled or failed meanwhile."""
    while True:
        await anyio.sleep(RUN_WATCH_INTERVAL)
        run_ids = list({task.run_id for task in worker.in_flight})
        if not run_ids:
            continue
        try:
            rows = await worker.db.fetch("finished_runs", run_ids)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            continue
        worker.discard_runs({row["run_id"] for row in rows})


async def signals(worker: Worker) -> None:
    """First SIGTERM/SIGINT drains; a second one skips the wait."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
        async for signum in received:
            name = signal.Signals(signum).name
            if not worker.stopping:
                worker.request_stop(name)
            else:
                logs.event("worker.hurry", signal=name)
                worker.hurry.set()


async def drain_watch(worker: Worker) -> None:
    """--drain: stop once nothing is in flight and the queues are empty."""
    while not worker.stopping:
        await anyio.sleep(DRAIN_CHECK_INTERVAL)
        if worker.in_flight or not all(p.idle for p in worker.producers):
            continue
        try:
            depth = 0
            for slug in worker.worker_ids:
                depth += (await worker.db.fetch("queue_metrics", slug))[0]["queue_length"]
        except Exception as exc:
            if not is_retryable(exc):
                raise
            continue
        if depth == 0 and not worker.in_flight:
            worker.request_stop("drained")


async def loop_lag(worker: Worker, interval: float = 0.25, warn_after: float = 0.5) -> None:
    """Measure how late the event loop wakes us; a blocking handler shows here."""
    while True:
        began = anyio.current_time()
        await anyio.sleep(interval)
        lag = anyio.current_time() - began - interval
        metrics.LOOP_LAG.observe(max(lag, 0.0))
        if lag > warn_after:
            logs.event("loop.lag", logging.WARNING, lag_ms=round(lag * 1000),
                       hint="a handler blocks the event loop")
