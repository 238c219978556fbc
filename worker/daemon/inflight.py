"""Every task the worker holds, from its claim until its outcome is written.

One place for what acts on held tasks: their deadlines (one sweep for all,
instead of a timer each), cancelling the handlers of runs that ended,
handing tasks back on shutdown, and waiting until a flow holds nothing
(isolation.py). Per-task calls are plain and cheap (see claims.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from uuid import UUID

from flowworker.daemon.claims import ClaimedTask


class InFlight:
    """The held tasks, and the flows waiting for theirs to be settled."""

    def __init__(self) -> None:
        self._tasks: set[ClaimedTask] = set()
        self._per_flow: Counter[str] = Counter()
        self._settled_waiters: dict[str, list[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def held(self, flow_slug: str) -> int:
        """How many of this flow's tasks are held (the in-flight gauge)."""
        return self._per_flow[flow_slug]

    def add(self, task: ClaimedTask) -> None:
        self._tasks.add(task)
        self._per_flow[task.flow.slug] += 1

    def settle(self, task: ClaimedTask) -> None:
        """Its outcome is written (or given up): the task is no longer held."""
        if task in self._tasks:
            self._tasks.remove(task)
            slug = task.flow.slug
            self._per_flow[slug] -= 1
            if not self._per_flow[slug]:
                for waiter in self._settled_waiters.pop(slug, []):
                    if not waiter.done():
                        waiter.set_result(None)

    async def wait_flow_settled(self, flow_slug: str) -> None:
        """Until every task of the flow held now and later is settled."""
        while self._per_flow[flow_slug]:
            waiter = asyncio.get_running_loop().create_future()
            self._settled_waiters.setdefault(flow_slug, []).append(waiter)
            await waiter

    def run_ids(self) -> set[UUID]:
        return {task.run_id for task in self._tasks}

    def expire_overdue(self, now: float) -> None:
        """Cancel the running handlers whose deadline is at or before `now`."""
        for task in self._tasks:
            if task.deadline is not None and task.deadline <= now:
                task.expire()

    def cancel_runs(self, run_ids: Iterable[UUID]) -> None:
        """Cancel the handlers of runs that ended (failed, cancelled); their
        results are dropped."""
        ended = set(run_ids)
        for task in list(self._tasks):
            if task.run_id in ended:
                task.cancel("discard")

    def release(self, *, started: bool) -> None:
        """Shutdown: hand back the tasks whose handler has not started
        (started=False), or all of them (True), without spending an attempt."""
        for task in list(self._tasks):
            if started or not task.started:
                task.cancel("release")
