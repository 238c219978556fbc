"""What the worker holds in memory: claimed tasks, their outcomes, free slots.

These run once per task, thousands of times a second, so they use asyncio
directly (the worker always runs on asyncio): anyio's primitives look up the
running backend on every call, which costs as much as a no-op task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from flowworker.dsl import Flow

Kind = Literal["completed", "error", "timeout", "release", "discard"]


@dataclass(eq=False, slots=True)
class ClaimedTask:
    """One claim: the task, its attempt (the claim token) and its input."""

    flow: Flow
    worker_id: UUID
    msg_id: int
    run_id: UUID
    step_slug: str
    task_index: int
    attempt: int
    input: Any
    flow_input: Any
    timeout: int
    isolated: bool = False  # its worker was lost twice: run it alone
    started: bool = False
    cancel_reason: Kind | None = None
    handle: asyncio.Task[None] | None = None  # the asyncio task running it
    finished: asyncio.Event | None = None  # made only for those someone waits on
    deadline: float | None = None  # monotonic time its running handler is cancelled at
    timed_out: bool = False
    fetch_flow_input: bool = False  # start_tasks left the (large) flow input to be fetched

    def cancel(self, reason: Kind) -> None:
        """Stop the handler: `discard` when the run ended, `release` on shutdown."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
            if self.handle is not None:
                self.handle.cancel()

    def expire(self) -> None:
        """Cancel a handler that ran past its timeout (unless cancelled already)."""
        if self.cancel_reason is None and not self.timed_out and self.handle is not None:
            self.timed_out = True
            self.handle.cancel()

    def fields(self) -> dict[str, Any]:
        return {"flow": self.flow.slug, "step": self.step_slug, "run_id": str(self.run_id),
                "task_index": self.task_index, "attempt": self.attempt}


def expire_overdue(tasks: Iterable[ClaimedTask], now: float) -> None:
    """Cancel the running handlers whose deadline is at or before `now`."""
    for task in tasks:
        if task.deadline is not None and task.deadline <= now:
            task.expire()


@dataclass(slots=True)
class Outcome:
    """What became of one claim; `kind` decides how it is written back."""

    task: ClaimedTask
    kind: Kind
    output_json: str | None = None
    error: str | None = None
    duration: float = 0.0


class Slots:
    """How many more tasks this worker may hold (--concurrency).

    take and give are plain calls; waiters are woken only when what they
    wait for is true, so a hundred tasks finishing cost no context switches."""

    EMPTY = -1  # what wait_empty waits for

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.alone = asyncio.Lock()  # held while a task runs alone (alone.py)

    @property
    def free(self) -> int:
        return self.total - self.used

    def take(self, count: int = 1) -> None:
        self.used += count

    def give(self, count: int = 1) -> None:
        """Return slots and wake everyone whose wait is over (other flows' producers too)."""
        self.used -= count
        if self._waiters:
            self._wake()

    def _satisfied(self, need: int) -> bool:
        return self.used <= 0 if need == self.EMPTY else self.free >= need

    def _wake(self) -> None:
        waiting = []
        for need, future in self._waiters:
            if self._satisfied(need):
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((need, future))
        self._waiters = waiting

    async def _wait(self, need: int) -> None:
        while not self._satisfied(need):
            future = asyncio.get_running_loop().create_future()
            entry = (need, future)
            self._waiters.append(entry)
            try:
                await future
            finally:
                if entry in self._waiters:
                    self._waiters.remove(entry)

    async def wait_free(self, at_least: int = 1) -> None:
        await self._wait(at_least)

    async def wait_empty(self) -> None:
        await self._wait(self.EMPTY)


class OutcomeQueue:
    """Outcomes on their way to the completer, at most `limit` waiting.

    put does not yield while there is room; when the completer falls behind
    (the database is slow or away) handlers wait here, holding their slots,
    so the worker stops claiming instead of piling up outcomes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[Outcome] = deque()
        self._closed = False
        self._has_items: asyncio.Future[None] | None = None
        self._has_room: asyncio.Future[None] | None = None
        self._unwritten = 0  # put and not yet written back
        self._all_written: asyncio.Future[None] | None = None

    @staticmethod
    def _release(future: asyncio.Future[None] | None) -> None:
        if future is not None and not future.done():
            future.set_result(None)

    async def put(self, outcome: Outcome) -> None:
        while len(self._items) >= self.limit:
            if self._has_room is None or self._has_room.done():
                self._has_room = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._has_room)
        self._items.append(outcome)
        self._unwritten += 1
        self._release(self._has_items)

    def written(self, count: int) -> None:
        """The completer is done with `count` outcomes it took (written or given up)."""
        self._unwritten -= count
        if not self._unwritten:
            self._release(self._all_written)

    async def all_written(self) -> None:
        """Wait until every outcome put so far has been written back."""
        while self._unwritten:
            if self._all_written is None or self._all_written.done():
                self._all_written = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._all_written)

    def close(self) -> None:
        """No more outcomes: take returns what is left, then an empty batch."""
        self._closed = True
        self._release(self._has_items)

    async def take(self, most: int) -> list[Outcome]:
        """Wait for outcomes and return up to `most` of them; [] once closed and empty."""
        while not self._items:
            if self._closed:
                return []
            self._has_items = asyncio.get_running_loop().create_future()
            await self._has_items
        batch = [self._items.popleft() for _ in range(min(most, len(self._items)))]
        self._release(self._has_room)
        return batch
