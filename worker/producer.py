"""Claim as many tasks as there are free slots, when woken or on a timer."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from uuid import UUID

import anyio

from flowworker import logs
from flowworker.alone import run_alone
from flowworker.dbpool import Database, backoff, is_retryable
from flowworker.dsl import Flow
from flowworker.settings import Settings
from flowworker.tasks import ClaimedTask, Slots

NOTIFY_DEBOUNCE = 0.002  # seconds: a NOTIFY flood causes at most one claim per window
CLAIM_COALESCE = 0.005  # seconds a busy worker waits for more free slots to claim together


class Producer:
    """One per flow: waits for a NOTIFY or its jittered poll timer, claims
    min(free slots, batch size) tasks in one round trip and dispatches them.
    It keeps claiming while claims come back full and slots are free."""

    def __init__(self, flow: Flow, worker_id: UUID, db: Database, settings: Settings,
                 slots: Slots, dispatch: Callable[[ClaimedTask], None],
                 notify_works: Callable[[], bool],
                 all_written: Callable[[], Awaitable[None]]) -> None:
        self.flow = flow
        self.worker_id = worker_id
        self.db = db
        self.settings = settings
        self.slots = slots
        self.dispatch = dispatch
        self.notify_works = notify_works
        self.all_written = all_written
        self._wake = anyio.Event()
        self._interval = settings.poll_min_interval
        self.idle = False  # the last claim found nothing
        self.first_round = anyio.Event()
        self._last_claim = 0.0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Claim until cancelled (the supervisor cancels us to stop claiming)."""
        more = True
        while True:
            await self.slots.wait_free()
            # One free slot at a time would cost a round trip per task: wait a
            # moment for half a batch of slots (never for the whole batch).
            with anyio.move_on_after(CLAIM_COALESCE):
                await self.slots.wait_free(max(1, min(self.settings.batch_size,
                                                      self.slots.total) // 2))
            if not more:
                await self._wait_for_signal()
            more = await self._claim_round()

    async def _claim_round(self) -> bool:
        """Claim once; True when the claim was full (there may be more)."""
        wanted = min(self.slots.free, self.settings.batch_size)
        self._wake = anyio.Event()
        self._last_claim = time.monotonic()
        claimed = await self._claim(wanted)
        self.idle = not claimed
        if claimed:
            self._interval = self.settings.poll_min_interval
        self.first_round.set()
        if claimed and claimed[0].isolated:
            # start_tasks hands out a task whose worker was lost twice alone.
            await run_alone(claimed[0], self.slots, self.dispatch, self.all_written, self._renew,
                            self._claim_span(claimed[0]) / 2)
            return True
        for task in claimed:
            self.dispatch(task)
        return len(claimed) == wanted

    def _claim_span(self, task: ClaimedTask) -> int:
        """Seconds a claim stays hidden (start_tasks: the task timeout + grace)."""
        return task.timeout + self.settings.claim_grace

    async def _renew(self, task: ClaimedTask) -> bool:
        """Keep the claim hidden for a full span again; False if it is no longer ours."""
        current = await self.db.retrying("extend_claims", lambda: self.db.fetchval(
            "extend_claims", self.flow.slug, [task.run_id], [task.step_slug],
            [task.task_index], [task.attempt], self._claim_span(task)))
        if not current:
            logs.event("task.claim_lost", **task.fields())
        return bool(current)

    async def _claim(self, wanted: int) -> list[ClaimedTask]:
        attempt = 0
        while True:
            # Reserve the slots while the claim is in flight, so producers of
            # other flows do not claim them too; dispatch takes them for real.
            self.slots.take(wanted)
            try:
                # Shielded: a claim cancelled after it committed would leave
                # its tasks hidden until their visibility timeout.
                with anyio.CancelScope(shield=True):
                    rows = await self.db.fetch("start_tasks", self.flow.slug, self.worker_id,
                                               wanted, self.settings.claim_grace)
                return [self._task(row) for row in rows]
            except Exception as exc:
                # A claim that committed before its connection dropped expires
                # and is redelivered; the next round is a fresh claim.
                if not is_retryable(exc):
                    raise
                logs.event("db.reconnecting", what="start_tasks", error=type(exc).__name__)
            finally:
                self.slots.give(wanted)
            await anyio.sleep(backoff(attempt))
            attempt += 1

    def _task(self, row: Mapping[str, Any]) -> ClaimedTask:
        task = ClaimedTask(self.flow, self.worker_id, row["msg_id"], row["run_id"],
                           row["step_slug"], row["task_index"], row["attempt"], row["input"],
                           row["flow_input"], row["timeout"], row["isolated"])
        if task.isolated:
            task.finished = asyncio.Event()  # _claim_round waits for it
        return task

    async def _wait_for_signal(self) -> None:
        """Sleep until a NOTIFY or the poll timer. A NOTIFY claims at once,
        but never sooner than NOTIFY_DEBOUNCE after the previous claim, so a
        flood of them costs at most one claim per window."""
        with anyio.move_on_after(self._next_interval()):
            await self._wake.wait()
            too_soon = self._last_claim + NOTIFY_DEBOUNCE - time.monotonic()
            if too_soon > 0:
                await anyio.sleep(too_soon)

    def _next_interval(self) -> float:
        low, high = self.settings.poll_min_interval, self.settings.poll_max_interval
        if self.notify_works():
            # The fallback poll: NOTIFY is only a hint.
            return random.uniform(high / 2, high)  # noqa: S311
        # Decorrelated jitter between the bounds; reset to low when work is found.
        self._interval = min(high, random.uniform(low, self._interval * 3))  # noqa: S311
        return self._interval
