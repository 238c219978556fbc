"""Run one handler under its timeout. Never writes to the database."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from dataclasses import dataclass

import anyio

from flowworker import logs, metrics
from flowworker.dbpool import UndecodableJson
from flowworker.dsl import Context, Step
from flowworker.tasks import ClaimedTask, Outcome


def _context(task: ClaimedTask) -> Context:
    return Context(run_id=task.run_id, flow_slug=task.flow.slug, step_slug=task.step_slug,
                   task_index=task.task_index, attempt=task.attempt,
                   flow_input=task.flow_input, worker_id=task.worker_id)


def _undecodable(task: ClaimedTask) -> str | None:
    for name, value in (("input", task.input), ("flow input", task.flow_input)):
        if isinstance(value, UndecodableJson):
            return f"the task's {name} cannot be decoded: {value.reason}"
    return None


MAX_ERROR_CHARS = 8192  # an exception's text is stored with every failed attempt


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


@dataclass(frozen=True)
class Limits:
    """Bounds on running handlers: `threads` plain-def handlers run at once
    (held while each runs); `runner` lends the threads and never makes one
    wait, so an abandoned thread does not hold a place; output size."""

    threads: anyio.CapacityLimiter
    runner: anyio.CapacityLimiter
    max_output_bytes: int


async def execute(task: ClaimedTask, limits: Limits) -> Outcome:
    """Run the task's handler and say what happened.

    A timeout cancels an async handler; a sync one is abandoned in its thread
    and its late result ignored. A cancel for shutdown or a finished run
    (ClaimedTask.cancel) is reported as `release` or `discard`, not as a failure.
    """
    step = task.flow.steps.get(task.step_slug)
    problem = _undecodable(task)
    if step is None:
        problem = f"no handler registered for step {task.step_slug!r} of flow {task.flow.slug!r}"
    if step is None or problem:
        return Outcome(task, "error", error=problem)
    began = time.monotonic()
    try:
        result, error, timed_out = await _run_handler(task, step, limits)
    except asyncio.CancelledError:
        if task.cancel_reason is None:
            raise  # not ours: the worker itself is being torn down
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        result, error, timed_out = None, None, False
    duration = time.monotonic() - began
    step_metrics = metrics.for_step(task.flow.slug, task.step_slug)
    if task.started:
        step_metrics.duration.observe(duration)
    if task.cancel_reason is not None:
        return Outcome(task, task.cancel_reason, duration=duration)
    if timed_out:
        return Outcome(task, "timeout", duration=duration,
                       error=f"timeout: the handler ran longer than {task.timeout} s")
    output_json = None
    if error is None:
        output_json, error = _serialise(result, limits.max_output_bytes)
    if error is not None:
        return Outcome(task, "error", error=error, duration=duration)
    return Outcome(task, "completed", output_json=output_json, duration=duration)


async def _run_handler(task: ClaimedTask, step: Step,
                       limits: Limits) -> tuple[object, str | None, bool]:
    """(result, error text, timed out) of one handler call.

    A plain `def` handler first waits for a thread; until it has one it has
    not started, so a shutdown hands it back instead of waiting for it.
    """
    if step.is_async:
        return await _call(task, step, limits.runner)
    async with limits.threads:
        return await _call(task, step, limits.runner)


async def _call(task: ClaimedTask, step: Step,
                runner: anyio.CapacityLimiter) -> tuple[object, str | None, bool]:
    if task.cancel_reason is not None:
        return None, None, False  # cancelled while it waited for a thread
    task.started = True
    metrics.for_step(task.flow.slug, task.step_slug).started.inc()
    if logs.enabled(logging.DEBUG):
        logs.event("task.started", logging.DEBUG, **task.fields())
    ctx = _context(task)
    result: object = None
    error: str | None = None
    # The worker's timeout sweep cancels the handler once this has passed:
    # one check per tick for all tasks, instead of a timer each.
    task.deadline = time.monotonic() + task.timeout
    try:
        if step.is_async:
            result = await step.handler(task.input, ctx)
        else:
            # A timed-out thread is abandoned and its late result ignored.
            call = functools.partial(step.handler, task.input, ctx)
            result = await anyio.to_thread.run_sync(call, limiter=runner,
                                                    abandon_on_cancel=True)
    except asyncio.CancelledError:
        if not task.timed_out or task.cancel_reason is not None:
            raise
    except Exception as exc:  # a handler's error fails its attempt
        error = _describe(exc)
    finally:
        task.deadline = None
    if task.timed_out:
        # The sweep's cancel is ours to absorb, even if the handler swallowed it.
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        return None, None, True
    return result, error, False
