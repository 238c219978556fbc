"""How many more tasks this worker may hold (--concurrency).

Taken and given once per task: plain calls, and waiters are woken only when
what they wait for is true, so a hundred tasks finishing cost no context
switches (asyncio directly, as in claims.py).
"""

from __future__ import annotations

import asyncio


class Slots:
    """How many more tasks this worker may hold (--concurrency).

    take and give are plain calls; waiters are woken only when what they
    wait for is true, so a hundred tasks finishing cost no context switches."""

    EMPTY = -1  # what wait_empty waits for

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

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


