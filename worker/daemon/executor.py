"""Run claimed tasks' handlers under their timeouts. Never writes to the database.

The producer submits each claimed task here; its outcome goes on the outcome
queue for the completer. Tasks go one way: producer -> executor -> completer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import pydantic

from flowworker import inputs, logs, metrics
from flowworker.control import Fail, RetryAfter
from flowworker.daemon import tracing
from flowworker.daemon.claims import ClaimedTask, Outcome
from flowworker.daemon.db_asyncpg import UndecodableJson
from flowworker.daemon.inflight import InFlight
from flowworker.daemon.outcomes import OutcomeQueue
from flowworker.daemon.slots import Slots
from flowworker.dsl import Context, Step

MAX_ERROR_CHARS = 8192  # an exception's text is stored with every failed attempt


class HandlerThreads:
    """Threads for plain `def` handlers: at most `size` run at once. A thread
    cannot be stopped, so one abandoned at its task's timeout (or at
    shutdown) keeps its place here, and its task's slot, until it returns:
    hung handlers can never pile up beyond --concurrency threads."""

    def __init__(self, size: int, give_slot: Callable[[], None]) -> None:
        self.limiter = anyio.CapacityLimiter(size)
        self._runner = anyio.CapacityLimiter(1_000_000)  # anyio's default caps threads at 40
        self._give_slot = give_slot
        self.overrunning = 0

    async def acquire(self, task: ClaimedTask) -> None:
        """Wait for a thread; until the task has one it has not started."""
        await self.limiter.acquire_on_behalf_of(task)

    async def run(self, task: ClaimedTask, call: Callable[[], object]) -> object:
        """Run call in a thread (acquire() first). A cancel abandons the
        thread; its place and the task's slot are given back when it returns."""
        loop = asyncio.get_running_loop()
        state = {"done": False, "abandoned": False}

        def ended() -> None:  # on the event loop, once the thread returned
            state["done"] = True
            self.limiter.release_on_behalf_of(task)
            if state["abandoned"]:
                self.overrunning -= 1
                self._give_slot()
                logs.event("task.thread_ended", **task.fields())

        def in_thread() -> object:
            try:
                return call()
            finally:
                # RuntimeError: the loop is gone, the worker is exiting.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(ended)

        try:
            return await anyio.to_thread.run_sync(in_thread, limiter=self._runner,
                                                  abandon_on_cancel=True)
        except BaseException:
            if not state["done"]:
                state["abandoned"] = True
                task.thread_overrun = True  # the executor leaves the slot to ended()
                self.overrunning += 1
                logs.event("task.thread_overrun", logging.WARNING, **task.fields(),
                           hint="a plain def handler ignored its timeout or shutdown; "
                                "its thread and slot stay taken until it returns")
            raise


@dataclass(frozen=True)
class Limits:
    """Bounds on running handlers: the threads for plain-def handlers; the
    largest output the database takes."""

    threads: HandlerThreads
    max_output_bytes: int


class Executor:
    """Runs each submitted task's handler as its own asyncio task (one anyio
    task each would cost more than a no-op handler) and puts its outcome on
    the queue. A handler task that dies of a bug in flowworker is raised by
    watch(), which stops the worker loudly."""

    def __init__(self, inflight: InFlight, slots: Slots, outcomes: OutcomeQueue,
                 limits: Limits, stopping: Callable[[], bool]) -> None:
        self.inflight = inflight
        self.slots = slots
        self.outcomes = outcomes
        self.limits = limits
        self.stopping = stopping
        self._handlers: set[asyncio.Task[None]] = set()
        self._crash: BaseException | None = None
        self._crashed = anyio.Event()

    def submit(self, task: ClaimedTask) -> None:
        """Take a slot for the task and start its handler."""
        self.slots.take(1)
        self.inflight.add(task)
        handle = asyncio.get_running_loop().create_task(self._run(task))
        self._handlers.add(handle)
        handle.add_done_callback(self._done)

    async def idle(self) -> None:
        """Until every submitted handler has finished and put its outcome."""
        while self._handlers:
            await asyncio.wait(set(self._handlers))

    async def watch(self) -> None:
        await self._crashed.wait()
        assert self._crash is not None
        raise self._crash

    def _done(self, handle: asyncio.Task[None]) -> None:
        self._handlers.discard(handle)
        if not handle.cancelled() and handle.exception() is not None and self._crash is None:
            self._crash = handle.exception()
            self._crashed.set()

    async def _run(self, task: ClaimedTask) -> None:
        # Cancellable only from here on: a task cancelled before its coroutine
        # started would never run this and never hand its claim back.
        task.handle = asyncio.current_task()
        try:
            if self.stopping() or task.cancel_reason is not None:
                outcome = Outcome(task, task.cancel_reason or "release")
            elif tracing.ENABLED and tracing.active():
                outcome = await tracing.traced(task, execute(task, self.limits))
            else:
                outcome = await execute(task, self.limits)
        finally:
            # From here on a cancel (a finished run, shutdown) must not lose the outcome.
            task.handle = None
            if task.finished is not None:
                task.finished.set()
        await self.outcomes.put(outcome)
        if not task.thread_overrun:
            self.slots.give()


def _context(task: ClaimedTask) -> Context:
    return Context(run_id=task.run_id, flow_slug=task.flow.slug, step_slug=task.step_slug,
                   task_index=task.task_index, attempt=task.attempt,
                   flow_input=task.flow_input, worker_id=task.worker_id)


def _undecodable(task: ClaimedTask) -> str | None:
    for name, value in (("input", task.input), ("flow input", task.flow_input)):
        if isinstance(value, UndecodableJson):
            return f"the task's {name} cannot be decoded: {value.reason}"
    return None


def _describe(exc: Exception) -> str:
    """`Type: message`, cut short when the message is huge (a payload in an
    exception must not bloat every attempt's row)."""
    text = f"{type(exc).__name__}: {exc}"
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return f"{text[:MAX_ERROR_CHARS]}... [{len(text) - MAX_ERROR_CHARS} more characters cut]"


def _serialise(result: object, max_bytes: int) -> tuple[str | None, str | None]:
    """(JSON text, None), or (None, why the output cannot be stored)."""
    try:
        text = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return None, f"output is not JSON-serialisable: {type(exc).__name__}: {exc}"
    size = len(text.encode())
    if size > max_bytes:
        return None, (f"output is {size} bytes, over the limit of {max_bytes} bytes "
                      "(flowworker.config max_output_bytes)")
    return text, None


async def execute(task: ClaimedTask, limits: Limits) -> Outcome:
    """Run the task's handler and say what happened.

    A timeout cancels an async handler; a sync one is abandoned in its thread
    and its late result ignored. A cancel for shutdown or a finished run
    (ClaimedTask.cancel) is reported as `release` or `discard`, not as a failure.
    """
    ready = _prepare(task)
    if isinstance(ready, Outcome):
        return ready
    step, handler_input = ready
    began = time.monotonic()
    try:
        done = await _run_handler(task, step, handler_input, limits)
    except asyncio.CancelledError:
        if task.cancel_reason is None:
            raise  # not ours: the worker itself is being torn down
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        done = _Done()
    duration = time.monotonic() - began
    if task.started:
        metrics.for_step(task.flow.slug, task.step_slug).duration.observe(duration)
    if task.cancel_reason is not None:
        return Outcome(task, task.cancel_reason, duration=duration)
    if done.timed_out:
        return Outcome(task, "timeout", duration=duration,
                       error=f"timeout: the handler ran longer than {task.timeout} s",
                       final=not step.retries(TimeoutError()))
    if done.error is not None:
        return Outcome(task, "error", error=done.error, duration=duration,
                       retry_after=done.retry_after, final=done.final)
    output_json, error = _serialise(done.result, limits.max_output_bytes)
    if error is not None:
        return Outcome(task, "error", error=error, duration=duration)
    return Outcome(task, "completed", output_json=output_json, duration=duration)


def _prepare(task: ClaimedTask) -> tuple[Step, object] | Outcome:
    """The step and the handler's input (checked when the handler declares its
    type); or the failed outcome when there is no handler or no usable input."""
    step = task.flow.steps.get(task.step_slug)
    if step is None or step.handler is None:
        return Outcome(task, "error", error=f"no handler registered for step "
                                            f"{task.step_slug!r} of flow {task.flow.slug!r}")
    problem = _undecodable(task)
    if problem:
        return Outcome(task, "error", error=problem)
    if step.input_adapter is None:
        return step, task.input
    try:
        return step, step.input_adapter.validate_python(task.input)
    except pydantic.ValidationError as exc:  # another attempt would not fix it
        return Outcome(task, "error", error=inputs.describe(exc), final=True)


@dataclass(slots=True)
class _Done:
    """How a handler call ended."""

    result: object = None
    error: str | None = None
    timed_out: bool = False
    retry_after: int | None = None  # the handler raised RetryAfter
    final: bool = False  # Fail, or an exception the step does not retry


def _failed(step: Step, exc: Exception) -> _Done:
    if isinstance(exc, RetryAfter):
        return _Done(error=_describe(exc), retry_after=exc.seconds)
    return _Done(error=_describe(exc), final=isinstance(exc, Fail) or not step.retries(exc))


async def _run_handler(task: ClaimedTask, step: Step, handler_input: object,
                       limits: Limits) -> _Done:
    """How one handler call ended.

    A plain `def` handler first waits for a thread; until it has one it has
    not started, so a shutdown hands it back instead of waiting for it.
    """
    if step.is_async:
        return await _call(task, step, handler_input, limits)
    await limits.threads.acquire(task)
    return await _call(task, step, handler_input, limits)


async def _call(task: ClaimedTask, step: Step, handler_input: object,
                limits: Limits) -> _Done:
    if task.cancel_reason is not None:
        if not step.is_async:
            limits.threads.limiter.release_on_behalf_of(task)
        return _Done()  # cancelled while it waited for a thread
    task.started = True
    metrics.for_step(task.flow.slug, task.step_slug).started.inc()
    if logs.enabled(logging.DEBUG):
        logs.event("task.started", logging.DEBUG, **task.fields())
    ctx = _context(task)
    done = _Done()
    # The worker's timeout sweep cancels the handler once this has passed:
    # one check per tick for all tasks, instead of a timer each.
    task.deadline = time.monotonic() + task.timeout
    handler = step.handler
    assert handler is not None  # _prepare refused a step without one (a wait step)
    try:
        if step.is_async:
            done.result = await handler(handler_input, ctx)
        else:
            done.result = await limits.threads.run(
                task, functools.partial(handler, handler_input, ctx))
    except asyncio.CancelledError:
        if not task.timed_out or task.cancel_reason is not None:
            raise
    except Exception as exc:  # a handler's error fails its attempt (or its task)
        done = _failed(step, exc)
    finally:
        task.deadline = None
    if task.timed_out:
        # The sweep's cancel is ours to absorb, even if the handler swallowed it.
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        return _Done(timed_out=True)
    return done
