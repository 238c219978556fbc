"""The executor under the worker's timeout sweep: a handler past its
deadline is cancelled and reported as a timeout, one within it is not,
and a shutdown or discard cancel stays what it is. The sweep is driven by
hand with a `now` past the deadline, so nothing here waits on a clock."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import anyio

from flowworker import Context, Flow
from flowworker.daemon.claims import ClaimedTask, Outcome
from flowworker.daemon.executor import MAX_ERROR_CHARS, HandlerThreads, Limits, execute
from flowworker.daemon.inflight import InFlight

flow = Flow("sweep", timeout=30)
started = asyncio.Event()
release = asyncio.Event()


@flow.step()
async def waits(_input: Any, _ctx: Context) -> str:
    started.set()
    await release.wait()
    return "done"


@flow.step()
async def swallows(_input: Any, _ctx: Context) -> str:
    started.set()
    try:
        await release.wait()
    except asyncio.CancelledError:
        return "kept going"
    return "done"


@flow.step()
async def raises_big(_input: Any, _ctx: Context) -> None:
    raise ValueError("x" * 100_000)


def claimed(step: str) -> ClaimedTask:
    return ClaimedTask(flow, uuid.uuid4(), 1, uuid.uuid4(), step, 0, 1, {}, {}, 30)


def limits() -> Limits:
    return Limits(threads=HandlerThreads(1, give_slot=lambda: None), max_output_bytes=1 << 20)


def expire_overdue(tasks: list[ClaimedTask], now: float) -> None:
    """The worker's deadline sweep over these tasks."""
    held = InFlight()
    for task in tasks:
        held.add(task)
    held.expire_overdue(now)


async def start(task: ClaimedTask) -> asyncio.Task[Outcome]:
    started.clear()
    release.clear()

    async def run() -> Outcome:
        task.handle = asyncio.current_task()
        return await execute(task, limits())

    handle = asyncio.get_running_loop().create_task(run())
    await started.wait()
    return handle


async def finish(handle: asyncio.Task[Outcome]) -> Outcome:
    with anyio.fail_after(5):  # a bound for a broken sweep, not synchronisation
        return await handle


async def test_a_handler_past_its_deadline_times_out() -> None:
    task = claimed("waits")
    handle = await start(task)
    assert task.deadline is not None
    expire_overdue([task], task.deadline + 1)
    outcome = await finish(handle)
    assert (outcome.kind, outcome.error) == (
        "timeout", "timeout: the handler ran longer than 30 s")
    assert task.deadline is None


async def test_a_handler_within_its_deadline_is_left_alone() -> None:
    task = claimed("waits")
    handle = await start(task)
    assert task.deadline is not None
    expire_overdue([task], time.monotonic())
    release.set()
    outcome = await finish(handle)
    assert (outcome.kind, outcome.output_json) == ("completed", '"done"')


async def test_a_handler_that_swallows_the_cancel_still_timed_out() -> None:
    task = claimed("swallows")
    handle = await start(task)
    assert task.deadline is not None
    expire_overdue([task], task.deadline)
    outcome = await finish(handle)
    assert outcome.kind == "timeout"
    assert not handle.cancelling()


async def test_a_discard_is_not_turned_into_a_timeout() -> None:
    task = claimed("waits")
    handle = await start(task)
    assert task.deadline is not None
    task.cancel("discard")
    expire_overdue([task], task.deadline + 1)
    outcome = await finish(handle)
    assert outcome.kind == "discard"
    assert not task.timed_out


async def test_a_huge_exception_message_is_cut_short() -> None:
    outcome = await execute(claimed("raises_big"), limits())
    assert outcome.kind == "error"
    assert outcome.error is not None
    assert outcome.error.startswith("ValueError: xxx")
    assert outcome.error.endswith(f"... [{100_012 - MAX_ERROR_CHARS} more characters cut]")
    assert len(outcome.error) < MAX_ERROR_CHARS + 50
