"""Outcomes on their way from the executor to the completer."""

from __future__ import annotations

import asyncio
from collections import deque

from flowworker.daemon.claims import Outcome


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
        self._release(self._has_items)

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
