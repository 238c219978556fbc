"""`flowworker run`: build the worker's parts and wire them. Nothing else
lives here: each behaviour is in the module named for it (see __init__)."""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable

import anyio
import asyncpg
from anyio.abc import TaskGroup

from flowworker import logs, metrics
from flowworker.daemon import maintenance, startup
from flowworker.daemon.completer import Completer
from flowworker.daemon.db_asyncpg import Database
from flowworker.daemon.executor import Executor, HandlerThreads, Limits
from flowworker.daemon.flow_inputs import FlowInputs
from flowworker.daemon.health import serve
from flowworker.daemon.inflight import InFlight
from flowworker.daemon.listener import Listener
from flowworker.daemon.outcomes import OutcomeQueue
from flowworker.daemon.producer import ClaimConfig, Producer
from flowworker.daemon.shutdown import Shutdown
from flowworker.daemon.slots import Slots
from flowworker.dsl import Flow
from flowworker.errors import ConfigurationError, FlowworkerError
from flowworker.registry import load_flows, select_flows
from flowworker.settings import Settings, unknown_variables

POOL_SIZE = 3  # claims, acknowledgements, bookkeeping; the listener has its own
IDLE_THREADS_PATIENCE = 1.0  # seconds for idle pool threads to end at exit


class Worker:
    """One worker process serving one or more flows."""

    def __init__(self, settings: Settings, flows: list[Flow]) -> None:
        self.settings = settings
        self.flows = flows
        # --prune-after: one more connection, so a batch takes none from claims.
        pool_size = POOL_SIZE + (settings.prune_after is not None)
        self.db = Database(settings.database_url, pool_size, settings.command_timeout,
                           settings.statement_cache_size)
        self.worker_ids = {flow.slug: uuid.uuid4() for flow in flows}
        self.handler_threads: HandlerThreads | None = None  # made in _serve
        self.inflight = InFlight()
        # Producers wake on their flow's NOTIFY; the listener is made before them.
        self._wakers: dict[str, Callable[[], None]] = {}
        for flow in flows:  # counted when scraped, not updated per task
            metrics.in_flight(flow.slug).set_function(
                functools.partial(self.inflight.held, flow.slug))

    async def run(self) -> None:
        shutdown = Shutdown(self.settings.shutdown_timeout)  # anyio primitives: in the loop
        listener = self._listener()
        registered: list[uuid.UUID] = []
        await self.db.open()
        try:
            async with anyio.create_task_group() as services:
                if self.settings.metrics_addr != "off":
                    # Bound first: a port in use fails before anything is registered.
                    await services.start(serve, self.settings.metrics_addr,
                                         startup.readiness(self.db, listener))
                max_output_bytes = await startup.check_database(self.db, self.flows)
                registered = await startup.register(self.db, self.worker_ids)
                await self._serve(services, shutdown, listener, max_output_bytes)
                services.cancel_scope.cancel()
        finally:
            # When the database is away, do not hold the exit for it.
            patience = 1.0 if shutdown.give_up() else 5.0
            with anyio.CancelScope(shield=True):
                await startup.unregister(self.db, registered, patience)
                await self.db.close(patience)
        logs.event("worker.stopped", pid=os.getpid())

    def _listener(self) -> Listener | None:
        if self.settings.signal != "notify":
            return None

        async def send_probe(channel: str) -> None:
            await self.db.retrying("notify probe", lambda: self.db.fetchval("notify", channel))

        return Listener(
            self.settings.database_url, list(self.worker_ids),
            lambda slug: self._wakers[slug](), send_probe,
            self.settings.listen_unavailable == "refuse",
            self.settings.statement_cache_size, self.settings.command_timeout)

    async def _serve(self, services: TaskGroup, shutdown: Shutdown, listener: Listener | None,
                     max_output_bytes: int) -> None:
        s = self.settings
        slots = Slots(s.concurrency)
        outcomes = OutcomeQueue(s.concurrency * 2)
        threads = self.handler_threads = HandlerThreads(s.sync_threads or s.concurrency,
                                                        slots.give)
        metrics.THREADS_OVERRUNNING.set_function(lambda: threads.overrunning)
        executor = Executor(self.inflight, slots, outcomes, Limits(threads, max_output_bytes),
                            lambda: shutdown.stopping)
        completer = Completer(self.db, outcomes, self.inflight.settle,
                              lambda run_id: self.inflight.cancel_runs([run_id]),
                              shutdown.give_up, shutdown.seconds_to_give_up)
        flow_inputs = FlowInputs(lambda run_ids: self.db.fetch("run_inputs", run_ids))

        def notify_works() -> bool:
            return listener is not None and listener.available

        producers = [
            Producer(ClaimConfig(flow, self.worker_ids[flow.slug], s.batch_size, s.claim_grace,
                                 s.poll_min_interval, s.poll_max_interval),
                     self.db, slots, self.inflight, executor.submit, flow_inputs, notify_works)
            for flow in self.flows]
        self._wakers.update({p.flow.slug: p.wake for p in producers})

        completer_done = anyio.Event()
        services.start_soon(_run_then_set, completer.run, completer_done)
        services.start_soon(executor.watch)
        services.start_soon(maintenance.signals, shutdown, lambda: len(self.inflight))
        services.start_soon(maintenance.heartbeat, self.db, self.worker_ids,
                            s.heartbeat_interval)
        services.start_soon(maintenance.watch_runs, self.db, self.inflight)
        services.start_soon(maintenance.sweep_deadlines, self.inflight)
        services.start_soon(maintenance.loop_lag)
        if s.drain:
            services.start_soon(maintenance.drain_watch, self.db, list(self.worker_ids),
                                self.inflight, lambda: all(p.idle for p in producers), shutdown)
        if listener is not None:
            services.start_soon(listener.run)
        if s.prune_after is not None:
            services.start_soon(maintenance.prune, self.db, s.prune_after)

        with shutdown.stop_claiming:
            async with anyio.create_task_group() as claiming:
                for producer in producers:
                    claiming.start_soon(producer.run)
                claiming.start_soon(_announce_ready, producers, listener, s)
        await shutdown.drain(self.inflight, slots)
        await executor.idle()
        outcomes.close()
        await completer_done.wait()


async def _run_then_set(job: Callable[[], Awaitable[None]], done: anyio.Event) -> None:
    try:
        await job()
    finally:
        done.set()


async def _announce_ready(producers: list[Producer], listener: Listener | None,
                          settings: Settings) -> None:
    for producer in producers:
        await producer.first_round.wait()
    if listener is not None:
        await listener.settled.wait()
    logs.event("worker.ready", flows=[p.flow.slug for p in producers],
               concurrency=settings.concurrency, signal=settings.signal)


def _backend_options() -> dict[str, bool]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def run_worker(settings: Settings) -> None:
    """Entry point of `flowworker run`; raises FlowworkerError for the CLI."""
    logs.configure(settings.log_format, settings.log_level)
    for text in unknown_variables():  # an event like any other: JSON when the logs are
        logs.event("settings.unknown_variable", logging.WARNING, warning=text)
    flows = select_flows(load_flows(settings.app), settings.flows,
                         settings.origin("flows") or "--flow")
    worker = Worker(settings, flows)
    # Everything loaded so far (flowworker, its libraries, the user's app)
    # lives as long as the process: keep the collector from walking it again
    # on every full collection. The drain spends ~11% less CPU in the worker.
    gc.freeze()
    try:
        anyio.run(worker.run, backend="asyncio", backend_options=_backend_options())
        threads = worker.handler_threads
        _exit_past_abandoned_threads(threads.overrunning if threads else 0)
    except Exception as exc:  # every way out becomes one line and an exit code
        first = _first_error(exc)
        if isinstance(first, FlowworkerError):
            raise first from None
        if isinstance(first, asyncpg.InvalidSQLStatementNameError):
            raise ConfigurationError(
                f"{first}: the server forgot a prepared statement, as PgBouncer in "
                "transaction pooling mode does; set FLOWWORKER_STATEMENT_CACHE_SIZE=0") from None
        traceback.print_exception(first, file=sys.stderr)
        logs.event("worker.crashed", error_type=type(first).__name__)
        raise FlowworkerError(f"worker crashed: {type(first).__name__}: {first}") from None


def _exit_past_abandoned_threads(overrunning: int) -> None:
    """Plain-def handlers abandoned at their timeout or at shutdown may still
    block in their threads; their outcomes are settled, so do not wait.

    Only those `overrunning` handler threads are reported. anyio's idle pool
    threads were told to stop when the event loop ended and are on their way
    out: they get a moment to finish. Whatever still runs then (a handler's
    thread, or one the app started) is not waited for either."""
    if overrunning:
        logs.event("worker.abandoned_threads", count=overrunning)
    deadline = time.monotonic() + (0 if overrunning else IDLE_THREADS_PATIENCE)
    for thread in _non_daemon_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    if _non_daemon_threads():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _non_daemon_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.is_alive() and not t.daemon and t is not threading.main_thread()]


def _first_error(exc: BaseException) -> BaseException:
    """The first real error inside (nested) task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        errors = exc.subgroup(FlowworkerError)
        exc = (errors or exc).exceptions[0]
    return exc
