"""`flowworker run`: wire producer, executor, completer and supervisor."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable

import anyio
import asyncpg

from flowworker import executor, health, logs, metrics, supervisor
from flowworker.completer import Completer
from flowworker.dbpool import Database
from flowworker.dsl import Flow
from flowworker.errors import (
    ConfigurationError,
    FlowworkerError,
    SchemaError,
    ShapeMismatchError,
)
from flowworker.flow_inputs import FlowInputs
from flowworker.listener import Listener
from flowworker.producer import Producer
from flowworker.registry import load_flows, select_flows
from flowworker.schema import incompatibility
from flowworker.settings import Settings
from flowworker.shape import shape_difference
from flowworker.tasks import ClaimedTask, Outcome, OutcomeQueue, Slots

POOL_SIZE = 3  # claims, acknowledgements, bookkeeping; the listener has its own


class Worker:
    """One worker process serving one or more flows."""

    def __init__(self, settings: Settings, flows: list[Flow]) -> None:
        self.settings = settings
        self.flows = flows
        self.db = Database(settings.database_url, POOL_SIZE, settings.command_timeout,
                           settings.statement_cache_size)
        self.worker_ids = {flow.slug: uuid.uuid4() for flow in flows}
        self.in_flight: set[ClaimedTask] = set()
        self.producers: list[Producer] = []
        self.listener: Listener | None = None
        self.stopping = False
        self.give_up_at = float("inf")  # monotonic time after which unwritten outcomes are dropped
        self._registered: list[uuid.UUID] = []
        # Handlers run as plain asyncio tasks (one anyio task each would cost
        # more than a no-op handler); _serve waits for all of them before leaving.
        self._handlers: set[asyncio.Task[None]] = set()
        self._handler_crash: BaseException | None = None
        self._outcomes = OutcomeQueue(settings.concurrency * 2)
        for flow in flows:  # counted when scraped, not updated per task
            metrics.in_flight(flow.slug).set_function(functools.partial(self._held, flow.slug))

    # -- lifecycle -----------------------------------------------------------

    async def run(self) -> None:
        # anyio primitives belong to the running event loop.
        self.slots = Slots(self.settings.concurrency)
        self.limits = executor.Limits(
            threads=anyio.CapacityLimiter(self.settings.sync_threads or self.settings.concurrency),
            runner=anyio.CapacityLimiter(1_000_000), max_output_bytes=1 << 20)
        self.hurry = anyio.Event()
        self._stop_claiming = anyio.CancelScope()
        await self.db.open()
        try:
            await self._check_database()
            await self._register()
            await self._serve()
        finally:
            # When the database is away, do not hold the exit for it.
            patience = 1.0 if self._give_up() else 5.0
            with anyio.CancelScope(shield=True):
                await self._unregister(patience)
                await self.db.close(patience)
        logs.event("worker.stopped", pid=os.getpid())

    async def _serve(self) -> None:
        completer = Completer(self.db, self._outcomes, self._on_written, self._give_up)
        flow_inputs = FlowInputs(lambda run_ids: self.db.fetch("run_inputs", run_ids))
        self.producers = [Producer(flow, self.worker_ids[flow.slug], self.db, self.settings,
                                   self.slots, self._dispatch, self.notify_works,
                                   self._outcomes.all_written, flow_inputs)
                          for flow in self.flows]
        by_slug = {p.flow.slug: p for p in self.producers}
        self._crashed = anyio.Event()
        async with anyio.create_task_group() as services:
            completer_done = anyio.Event()
            services.start_soon(self._run_then_set, completer.run, completer_done)
            services.start_soon(self._watch_handlers)
            await self._start_services(services, by_slug)
            with self._stop_claiming:
                async with anyio.create_task_group() as claiming:
                    for producer in self.producers:
                        claiming.start_soon(producer.run)
                    claiming.start_soon(self._announce_ready)
            await self._drain_handlers()
            while self._handlers:
                await asyncio.wait(set(self._handlers))
            self._outcomes.close()
            await completer_done.wait()
            services.cancel_scope.cancel()

    async def _start_services(self, services: anyio.abc.TaskGroup,
                              by_slug: dict[str, Producer]) -> None:
        services.start_soon(supervisor.signals, self)
        services.start_soon(supervisor.heartbeat, self)
        services.start_soon(supervisor.watch_runs, self)
        services.start_soon(supervisor.expire_handlers, self)
        services.start_soon(supervisor.loop_lag, self)
        if self.settings.drain:
            services.start_soon(supervisor.drain_watch, self)
        if self.settings.signal == "notify":
            self.listener = Listener(
                self.settings.database_url, list(by_slug), lambda slug: by_slug[slug].wake(),
                self._send_probe, self.settings.listen_unavailable == "refuse",
                self.settings.statement_cache_size, self.settings.command_timeout)
            services.start_soon(self.listener.run)
        if self.settings.metrics_addr != "off":
            await services.start(health.serve, self.settings.metrics_addr, self._not_ready)

    @staticmethod
    async def _run_then_set(job: Callable[[], Awaitable[None]], done: anyio.Event) -> None:
        try:
            await job()
        finally:
            done.set()

    async def _announce_ready(self) -> None:
        for producer in self.producers:
            await producer.first_round.wait()
        if self.listener is not None:
            await self.listener.settled.wait()
        logs.event("worker.ready", flows=[f.slug for f in self.flows],
                   concurrency=self.settings.concurrency, signal=self.settings.signal)

    def _give_up(self) -> bool:
        return self.hurry.is_set() or time.monotonic() > self.give_up_at

    def request_stop(self, reason: str) -> None:
        """Stop claiming and drain (first signal, or --drain finished)."""
        if self.stopping:
            return
        self.stopping = True
        # Past the drain timeout (and a second to write what just finished),
        # outcomes the database cannot take are dropped: their claims expire
        # and are redelivered, and the worker still exits.
        self.give_up_at = time.monotonic() + self.settings.shutdown_timeout + 1.0
        logs.event("worker.draining", reason=reason, in_flight=len(self.in_flight),
                   shutdown_timeout=self.settings.shutdown_timeout)
        self._stop_claiming.cancel()

    async def _drain_handlers(self) -> None:
        """Hand back what has not started, give running handlers the
        shutdown timeout (or until a second signal), then hand back the rest."""
        for task in list(self.in_flight):
            if not task.started:
                task.cancel("release")
        with anyio.move_on_after(self.settings.shutdown_timeout):
            async with anyio.create_task_group() as race:
                async def finish_first(wait: Callable[[], Awaitable[None]]) -> None:
                    await wait()
                    race.cancel_scope.cancel()
                race.start_soon(finish_first, self.slots.wait_empty)
                race.start_soon(finish_first, self.hurry.wait)
        for task in list(self.in_flight):
            task.cancel("release")

    # -- tasks ---------------------------------------------------------------

    def _dispatch(self, task: ClaimedTask) -> None:
        self.slots.take(1)
        self.in_flight.add(task)
        handle = asyncio.get_running_loop().create_task(self._run_task(task))
        self._handlers.add(handle)
        handle.add_done_callback(self._handler_done)

    def _held(self, flow_slug: str) -> int:
        return sum(1 for task in self.in_flight if task.flow.slug == flow_slug)

    def _handler_done(self, handle: asyncio.Task[None]) -> None:
        self._handlers.discard(handle)
        if not handle.cancelled() and handle.exception() is not None and not self._crashed.is_set():
            self._handler_crash = handle.exception()
            self._crashed.set()

    async def _watch_handlers(self) -> None:
        """A handler task that died of a bug in flowworker stops the worker loudly."""
        await self._crashed.wait()
        assert self._handler_crash is not None
        raise self._handler_crash

    async def _run_task(self, task: ClaimedTask) -> None:
        # Cancellable only from here on: a task cancelled before its coroutine
        # started would never run this and never hand its claim back.
        task.handle = asyncio.current_task()
        try:
            if self.stopping or task.cancel_reason is not None:
                outcome = Outcome(task, task.cancel_reason or "release")
            else:
                outcome = await executor.execute(task, self.limits)
        finally:
            # From here on a cancel (a finished run, shutdown) must not lose the outcome.
            task.handle = None
            self.in_flight.discard(task)
            if task.finished is not None:
                task.finished.set()
        await self._outcomes.put(outcome)
        self.slots.give()

    def _on_written(self, outcome: Outcome, result: str) -> None:
        if result == "failed":
            self.discard_runs({outcome.task.run_id})

    def discard_runs(self, run_ids: set[uuid.UUID]) -> None:
        """Cancel in-flight handlers of runs that ended; drop their results."""
        for task in list(self.in_flight):
            if task.run_id in run_ids:
                task.cancel("discard")

    # -- database checks and registry -----------------------------------------

    async def _check_database(self) -> None:
        if not await self.db.fetchval("schema_present"):
            raise SchemaError("flowworker schema is not installed; run `flowworker migrate`")
        problem = await self._schema_problem()
        if problem:
            raise SchemaError(problem)
        self.limits = dataclasses.replace(
            self.limits, max_output_bytes=int(await self.db.fetchval("max_output_bytes")))
        for flow in self.flows:
            problem = shape_difference(flow, await self.db.fetch("flow_shape", flow.slug))
            if problem:
                raise ShapeMismatchError(problem)

    async def _register(self) -> None:
        for slug, worker_id in self.worker_ids.items():
            await self.db.fetchval("register_worker", worker_id, slug, socket.gethostname(),
                                   os.getpid())
            self._registered.append(worker_id)
        logs.event("worker.started", worker_id=[str(w) for w in self.worker_ids.values()],
                   flows=list(self.worker_ids), pid=os.getpid())

    async def _unregister(self, patience: float) -> None:
        with anyio.move_on_after(patience):
            for worker_id in self._registered:
                try:
                    await self.db.fetchval("stop_worker", worker_id)
                except Exception as exc:  # best effort on the way out
                    logs.event("worker.unregister_failed", error=type(exc).__name__)

    async def _send_probe(self, channel: str) -> None:
        await self.db.retrying("notify probe", lambda: self.db.fetchval("notify", channel))

    def notify_works(self) -> bool:
        """Whether producers may rely on NOTIFY and poll only as a fallback."""
        return self.listener is not None and self.listener.available

    async def _schema_problem(self) -> str | None:
        """Why this worker cannot run against the database's schema, if it cannot."""
        version = await self.db.fetchval("schema_version")
        if version < 2:  # before min_worker_version existed
            return incompatibility(version, 1)
        return incompatibility(version, await self.db.fetchval("min_worker_version"))

    async def _not_ready(self) -> str | None:
        try:
            with anyio.fail_after(2):
                problem = await self._schema_problem()
        except Exception as exc:  # any failure means not ready
            return f"database: {type(exc).__name__}"
        if problem:
            return problem
        if self.listener is not None and self.listener.available and not self.listener.up:
            return "listener down"
        return None


def _backend_options() -> dict[str, bool]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def run_worker(settings: Settings) -> None:
    """Entry point of `flowworker run`; raises FlowworkerError for the CLI."""
    logs.configure(settings.log_format, settings.log_level)
    flows = select_flows(load_flows(settings.app), settings.flows)
    worker = Worker(settings, flows)
    # Everything loaded so far (flowworker, its libraries, the user's app)
    # lives as long as the process: keep the collector from walking it again
    # on every full collection. The drain spends ~11% less CPU in the worker.
    gc.freeze()
    try:
        anyio.run(worker.run, backend="asyncio", backend_options=_backend_options())
        _exit_past_abandoned_threads()
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


def _exit_past_abandoned_threads() -> None:
    """Plain-def handlers abandoned at their timeout or at shutdown may still
    block in their threads; their outcomes are settled, so do not wait."""
    stuck = [t for t in threading.enumerate()
             if t.is_alive() and not t.daemon and t is not threading.main_thread()]
    if stuck:
        logs.event("worker.abandoned_threads", count=len(stuck))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _first_error(exc: BaseException) -> BaseException:
    """The first real error inside (nested) task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        errors = exc.subgroup(FlowworkerError)
        exc = (errors or exc).exceptions[0]
    return exc
