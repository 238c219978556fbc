"""OutcomeQueue.all_written: what a task run alone waits for (worker/alone.py).
It returns only once the completer is done with every outcome put so far,
including outcomes taken but still being written."""

from __future__ import annotations

import asyncio
import uuid

from flowworker import Flow
from flowworker.tasks import ClaimedTask, Outcome, OutcomeQueue

flow = Flow("written")


def outcome() -> Outcome:
    task = ClaimedTask(flow, uuid.uuid4(), 1, uuid.uuid4(), "s", 0, 1, {}, {}, 30)
    return Outcome(task, "completed", "null")


async def test_all_written_returns_at_once_when_nothing_was_put() -> None:
    await asyncio.wait_for(OutcomeQueue(4).all_written(), 1)


async def test_all_written_waits_for_outcomes_taken_but_not_yet_written() -> None:
    queue = OutcomeQueue(4)
    await queue.put(outcome())
    await queue.put(outcome())
    waiters = [asyncio.get_running_loop().create_task(queue.all_written()) for _ in range(2)]
    batch = await queue.take(10)
    assert len(batch) == 2
    await asyncio.sleep(0)  # let the waiters run up to their wait
    assert not any(w.done() for w in waiters), "taken is not written"
    queue.written(1)
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters), "one of two written"
    queue.written(1)
    await asyncio.wait_for(asyncio.gather(*waiters), 1)


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    queue = OutcomeQueue(4)
    await queue.put(outcome())
    first = asyncio.get_running_loop().create_task(queue.all_written())
    second = asyncio.get_running_loop().create_task(queue.all_written())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    queue.written(1)
    await asyncio.wait_for(second, 1)
    assert first.cancelled()
