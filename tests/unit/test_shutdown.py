"""The stop sequence with the real executor and completer over a fake
database: what has not started is handed back first, running handlers get
the shutdown timeout (or less, on a second signal), the rest are handed
back after it; and when outcomes the database cannot take are given up."""

from __future__ import annotations

import asyncio
import time
import types
from typing import Any

import anyio
import pytest

from flowworker import Context, Flow
from flowworker.daemon import shutdown as shutdown_module
from flowworker.daemon.claims import ClaimedTask
from flowworker.daemon.completer import Completer
from flowworker.daemon.executor import Executor, HandlerThreads, Limits
from flowworker.daemon.inflight import InFlight
from flowworker.daemon.outcomes import OutcomeQueue
from flowworker.daemon.shutdown import Shutdown
from flowworker.daemon.slots import Slots
from tests.unit.fakes import DEADLINE, Calls, FakeDatabase, claimed

flow = Flow("stopping", timeout=30)
started = Calls[int]()  # task indexes whose handler began
finish = asyncio.Event()


@flow.step()
async def waits(_input: Any, ctx: Context) -> str:
    started(ctx.task_index)
    await finish.wait()
    return "done"


@flow.step()
def blocking(_input: Any, ctx: Context) -> str:
    started(ctx.task_index)
    return "done"


def ack_completed(*args: Any) -> list[dict[str, Any]]:
    return [{"ord": i + 1, "result": "completed", "run_status": None}
            for i in range(len(args[0]))]


class Worker:
    """The parts runtime.Worker wires between the producer and the database."""

    def __init__(self, timeout: float) -> None:
        finish.clear()
        started.seen.clear()
        self.db = FakeDatabase({"release_tasks": 1, "ack_tasks": ack_completed})
        self.slots, self.inflight, self.outcomes = Slots(4), InFlight(), OutcomeQueue(8)
        self.shutdown = Shutdown(timeout)
        self.threads = HandlerThreads(1, self.slots.give)
        self.executor = Executor(self.inflight, self.slots, self.outcomes,
                                 Limits(self.threads, 1 << 20),
                                 lambda: self.shutdown.stopping)
        self.settled = Calls[ClaimedTask]()

        def settle(task: ClaimedTask) -> None:
            self.inflight.settle(task)
            self.settled(task)

        self.completer = Completer(self.db, self.outcomes, settle, lambda _run: None,
                                   self.shutdown.give_up, self.shutdown.seconds_to_give_up)

    async def stop(self) -> None:
        """What runtime.Worker does once claiming has stopped."""
        self.shutdown.begin("SIGTERM", len(self.inflight))
        await self.shutdown.drain(self.inflight, self.slots)
        await self.executor.idle()
        self.outcomes.close()

    def submit(self, index: int, step: str = "waits") -> ClaimedTask:
        task = claimed(flow, step, index=index)
        self.executor.submit(task)
        return task

    def released(self) -> list[list[int]]:
        return [call.args[2] for call in self.db.calls_to("release_tasks")]


async def test_unstarted_tasks_are_handed_back_first_and_a_second_signal_ends_the_wait(
        ) -> None:
    w = Worker(timeout=3600)
    running = w.submit(0)
    await started.reach(1)
    # A plain def handler has not started until it has a thread; the only
    # one is taken (as by a long handler of another task).
    w.threads.limiter.acquire_on_behalf_of_nowait("another task")
    waiting = w.submit(1, "blocking")
    async with anyio.create_task_group() as group:
        group.start_soon(w.completer.run)
        group.start_soon(w.stop)
        await w.db.called("release_tasks")
        assert w.released() == [[1]], "the unstarted task, at once"
        assert running.cancel_reason is None, "the running one is given the timeout"
        w.shutdown.hurry("SIGINT")
        await w.db.called("release_tasks", 2)
    assert w.released() == [[1], [0]]
    assert started.seen == [0], "the handed-back task never ran"
    assert w.db.calls_to("ack_tasks") == []
    assert sorted(t.task_index for t in w.settled.seen) == [0, 1]
    assert waiting.cancel_reason == running.cancel_reason == "release"


async def test_a_handler_that_finishes_within_the_timeout_is_acknowledged() -> None:
    w = Worker(timeout=3600)
    running = w.submit(0)
    await started.reach(1)
    async with anyio.create_task_group() as group:
        group.start_soon(w.completer.run)
        group.start_soon(w.stop)
        finish.set()
    assert [call.args[2] for call in w.db.calls_to("ack_tasks")] == [[0]]
    assert w.released() == []
    assert w.settled.seen == [running]


async def test_handlers_still_running_at_the_timeout_are_handed_back() -> None:
    timeout = 0.05
    w = Worker(timeout)
    w.submit(0)
    await started.reach(1)
    began = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(w.completer.run)
        group.start_soon(w.stop)
        await w.db.called("release_tasks")
    assert time.monotonic() - began >= timeout
    assert w.released() == [[0]]


async def test_nothing_held_means_no_wait() -> None:
    w = Worker(timeout=3600)
    with anyio.fail_after(DEADLINE):
        await w.shutdown.drain(w.inflight, w.slots)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """shutdown.py's clock (and no one else's)."""
    fake = Clock()
    monkeypatch.setattr(shutdown_module, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


async def test_outcomes_are_given_up_a_second_after_the_timeout(clock: Clock) -> None:
    shutdown = Shutdown(timeout=5)
    assert not shutdown.give_up()
    shutdown.begin("SIGTERM", 3)
    clock.now += 6.0
    assert not shutdown.give_up(), "the timeout and a second to write what just finished"
    shutdown.begin("SIGTERM", 3)  # --drain finishing meanwhile changes nothing
    clock.now += 0.01
    assert shutdown.give_up()


async def test_a_second_signal_gives_up_at_once(clock: Clock) -> None:
    shutdown = Shutdown(timeout=5)
    shutdown.begin("SIGTERM", 3)
    shutdown.hurry("SIGTERM")
    assert shutdown.give_up()
    assert shutdown.stop_claiming.cancel_called
