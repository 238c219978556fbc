"""Flow inputs a claim left behind (large ones), fetched once per run and kept.

start_tasks sends a task's flow input along only when it is small; a map over
a large input would otherwise send the whole input with every element. The
worker reads such an input from its run once, and keeps the most recent ones
(bounded by their stored size) for the tasks of that run still to come.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

from flowworker.daemon.db_asyncpg import UndecodableJson

Fetch = Callable[[list[UUID]], Awaitable[Sequence[Any]]]  # rows of (run_id, input, size)


class FlowInputs:
    """An LRU of run_id -> decoded flow input, at most `budget` bytes (as stored)."""

    def __init__(self, fetch: Fetch, budget: int = 16 << 20) -> None:
        self.fetch = fetch
        self.budget = budget
        self._kept: OrderedDict[UUID, tuple[Any, int]] = OrderedDict()
        self._size = 0

    async def get(self, run_ids: set[UUID]) -> dict[UUID, Any]:
        """The flow inputs of these runs, fetching the ones not kept in one query."""
        found: dict[UUID, Any] = {}
        for run_id in run_ids:
            if run_id in self._kept:
                self._kept.move_to_end(run_id)
                found[run_id] = self._kept[run_id][0]
        missing = [run_id for run_id in run_ids if run_id not in found]
        if missing:
            for row in await self.fetch(missing):
                found[row["run_id"]] = row["input"]
                self._keep(row["run_id"], row["input"], row["size"])
        for run_id in missing:
            found.setdefault(run_id, UndecodableJson("its run is gone"))
        return found

    def _keep(self, run_id: UUID, value: Any, size: int) -> None:
        if size > self.budget:
            return
        if run_id in self._kept:
            self._size -= self._kept.pop(run_id)[1]
        self._kept[run_id] = (value, size)
        self._size += size
        while self._size > self.budget:
            _, (_, dropped) = self._kept.popitem(last=False)
            self._size -= dropped
