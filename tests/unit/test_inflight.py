"""InFlight: what the worker holds between a claim and its written outcome.
wait_flow_settled is what a task run alone waits for (daemon/isolation.py):
every task of its flow settled, the others' flows not counted."""

from __future__ import annotations

import asyncio
import uuid

from flowworker import Flow
from flowworker.daemon.claims import ClaimedTask
from flowworker.daemon.inflight import InFlight

mine, other = Flow("mine"), Flow("other")


def task(flow: Flow, run_id: uuid.UUID | None = None) -> ClaimedTask:
    return ClaimedTask(flow, uuid.uuid4(), 1, run_id or uuid.uuid4(), "s", 0, 1, {}, {}, 30)


async def test_waiting_for_a_flow_that_holds_nothing_returns_at_once() -> None:
    held = InFlight()
    held.add(task(other))
    await asyncio.wait_for(held.wait_flow_settled("mine"), 1)


async def test_a_flow_is_settled_when_its_last_task_is() -> None:
    held = InFlight()
    first, second, elsewhere = task(mine), task(mine), task(other)
    for t in (first, second, elsewhere):
        held.add(t)
    waiters = [asyncio.get_running_loop().create_task(held.wait_flow_settled("mine"))
               for _ in range(2)]
    await asyncio.sleep(0)  # let the waiters reach their wait
    held.settle(first)
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters), "one of two settled"
    held.settle(second)
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert (len(held), held.held("mine"), held.held("other")) == (1, 0, 1)


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    held = InFlight()
    only = task(mine)
    held.add(only)
    first = asyncio.get_running_loop().create_task(held.wait_flow_settled("mine"))
    second = asyncio.get_running_loop().create_task(held.wait_flow_settled("mine"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    held.settle(only)
    await asyncio.wait_for(second, 1)
    assert first.cancelled()


def test_settling_twice_counts_once() -> None:
    held = InFlight()
    only = task(mine)
    held.add(only)
    held.settle(only)
    held.settle(only)
    assert (len(held), held.held("mine")) == (0, 0)


def test_cancel_runs_discards_only_those_runs_and_release_spares_started_tasks() -> None:
    held = InFlight()
    ended = uuid.uuid4()
    doomed, spared, running = task(mine, ended), task(mine), task(other)
    running.started = True
    for t in (doomed, spared, running):
        held.add(t)
    held.cancel_runs([ended])
    assert (doomed.cancel_reason, spared.cancel_reason) == ("discard", None)
    held.release(started=False)
    assert (spared.cancel_reason, running.cancel_reason) == ("release", None)
    held.release(started=True)
    assert running.cancel_reason == "release"
    assert doomed.cancel_reason == "discard", "a discard stays a discard"
