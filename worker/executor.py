"""Run one handler under its timeout. Never writes to the database."""

from __future__ import annotations

import functools
import json
import time

import anyio

from flowworker import logs, metrics
from flowworker.dsl import Context
from flowworker.tasks import ClaimedTask, Outcome


def _context(task: ClaimedTask) -> Context:
    return Context(run_id=task.run_id, flow_slug=task.flow.slug, step_slug=task.step_slug,
                   task_index=task.task_index, attempt=task.attempt,
                   flow_input=task.flow_input, worker_id=task.worker_id)


async def execute(task: ClaimedTask, limiter: anyio.CapacityLimiter) -> Outcome:
    """Run the task's handler and say what happened.

    A timeout cancels an async handler; a sync one is abandoned in its thread
    and its late result ignored. A cancel for shutdown or a finished run is
    reported as `release` or `discard`, not as a failure.
    """
    step = task.flow.steps.get(task.step_slug)
    if step is None:
        return Outcome(task, "error", error=f"no handler registered for step "
                       f"{task.step_slug!r} of flow {task.flow.slug!r}")
    ctx = _context(task)
    began = time.monotonic()
    task.started = True
    metrics.TASKS_STARTED.labels(task.flow.slug, task.step_slug).inc()
    logs.event("task.started", **task.fields())
    result: object = None
    error: str | None = None
    with task.cancel_scope:
        with anyio.move_on_after(task.timeout) as deadline:
            try:
                if step.is_async:
                    result = await step.handler(task.input, ctx)
                else:
                    call = functools.partial(step.handler, task.input, ctx)
                    result = await anyio.to_thread.run_sync(
                        call, limiter=limiter, abandon_on_cancel=True)
            except Exception as exc:  # a handler's error fails its attempt
                error = f"{type(exc).__name__}: {exc}"
    duration = time.monotonic() - began
    metrics.TASK_DURATION.labels(task.flow.slug, task.step_slug).observe(duration)
    if task.cancel_reason is not None:
        return Outcome(task, task.cancel_reason, duration=duration)
    if deadline.cancelled_caught:
        return Outcome(task, "timeout", duration=duration,
                       error=f"timeout: the handler ran longer than {task.timeout} s")
    if error is not None:
        return Outcome(task, "error", error=error, duration=duration)
    try:
        output_json = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return Outcome(task, "error", duration=duration,
                       error=f"output is not JSON-serialisable: {exc}")
    return Outcome(task, "completed", output_json=output_json, duration=duration)
