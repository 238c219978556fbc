"""Claim as many tasks as there are free slots, when woken or on a timer."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anyio
import asyncpg

from flowworker import logs, metrics
from flowworker.daemon.claims import ClaimedTask
from flowworker.daemon.db_asyncpg import Queries, backoff, is_retryable
from flowworker.daemon.flow_inputs import FlowInputs
from flowworker.daemon.inflight import InFlight
from flowworker.daemon.isolation import run_alone
from flowworker.daemon.slots import Slots
from flowworker.dsl import Flow

NOTIFY_DEBOUNCE = 0.002  # seconds: a NOTIFY flood causes at most one claim per window
CLAIM_COALESCE = 0.005  # seconds a busy worker waits for more free slots to claim together
CLAIM_FAILED_BACKOFF_CAP = 30.0  # seconds: the longest wait after a claim the database refused
RECONNECT_BACKOFF_CAP = 5.0  # seconds: the longest wait while the database is away


@dataclass(frozen=True)
class ClaimConfig:
    """What one producer claims, and how often it looks."""

    flow: Flow
    worker_id: UUID
    batch_size: int  # most tasks per claim
    grace: int  # seconds a claim stays hidden beyond the task timeout
    poll_min: float  # seconds: the shortest wait between polls that find nothing
    poll_max: float  # seconds: the longest; also the fallback poll beside NOTIFY


class Producer:
    """One per flow: waits for a NOTIFY or its jittered poll timer, claims
    min(free slots, batch size) tasks in one round trip and submits them to
    the executor. It keeps claiming while claims come back full and slots
    are free."""

    def __init__(self, config: ClaimConfig, db: Queries, slots: Slots, inflight: InFlight,
                 submit: Callable[[ClaimedTask], None], flow_inputs: FlowInputs,
                 notify_works: Callable[[], bool]) -> None:
        self.config = config
        self.flow = config.flow
        self.worker_id = config.worker_id
        self.db = db
        self.slots = slots
        self.inflight = inflight
        self.submit = submit
        self.flow_inputs = flow_inputs
        self.notify_works = notify_works
        self._wake = anyio.Event()
        self._interval = config.poll_min
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
                await self.slots.wait_free(max(1, min(self.config.batch_size,
                                                      self.slots.total) // 2))
            if not more:
                await self._wait_for_signal()
            more = await self._claim_round()

    async def _claim_round(self) -> bool:
        """Claim once; True when the claim was full (there may be more)."""
        wanted = min(self.slots.free, self.config.batch_size)
        if wanted < 1:
            return True  # another flow's producer took the free slots meanwhile
        self._wake = anyio.Event()
        self._last_claim = time.monotonic()
        claimed = await self._claim(wanted)
        self.idle = not claimed
        if claimed:
            self._interval = self.config.poll_min
        self.first_round.set()
        if claimed and claimed[0].isolated:
            # start_tasks hands out a task whose worker was lost twice alone.
            await run_alone(claimed[0], self.inflight, self.slots, self.submit, self._renew,
                            self._claim_span(claimed[0]) / 2)
            return True
        for task in claimed:
            self.submit(task)
        return len(claimed) == wanted

    def _claim_span(self, task: ClaimedTask) -> int:
        """Seconds a claim stays hidden (start_tasks: the task timeout + grace)."""
        return task.timeout + self.config.grace

    async def _renew(self, task: ClaimedTask) -> bool:
        """Keep the claim hidden for a full span again; False if it is no longer ours."""
        current = await self.db.retrying("extend_claims", lambda: self.db.fetchval(
            "extend_claims", self.flow.slug, [task.run_id], [task.step_slug],
            [task.task_index], [task.attempt], self._claim_span(task), [task.worker_id]))
        if not current:
            logs.event("task.claim_lost", **task.fields())
        return bool(current)

    async def _claim(self, wanted: int) -> list[ClaimedTask]:
        attempt = 0
        while True:
            # Reserve the slots while the claim is in flight, so producers of
            # other flows do not claim them too; submit takes them for real.
            self.slots.take(wanted)
            try:
                # Shielded: a claim cancelled after it committed would leave
                # its tasks hidden until their visibility timeout.
                with anyio.CancelScope(shield=True):
                    rows, cap = await self._start_tasks(wanted)
                    if rows is not None:
                        waited = metrics.queue_wait(self.flow.slug).observe
                        for row in rows:
                            waited(row["waited"])
                        tasks = [self._task(row) for row in rows]
                        await self._fill_flow_inputs(tasks)
                        return tasks
            finally:
                self.slots.give(wanted)
            await anyio.sleep(backoff(attempt, cap=cap))
            attempt += 1

    async def _start_tasks(self, wanted: int) -> tuple[list[asyncpg.Record] | None, float]:
        """The claimed rows; or None, when the claim failed, with the longest
        wait before the next try."""
        try:
            rows: list[asyncpg.Record] = await self.db.fetch(
                "start_tasks", self.flow.slug, self.worker_id, wanted, self.config.grace)
            return rows, 0.0
        except Exception as exc:
            # A claim that committed before its connection dropped expires
            # and is redelivered; the next round is a fresh claim. A claim
            # the database refuses is tried again after a longer while:
            # whatever it is, it must not end the worker.
            if is_retryable(exc):
                metrics.DB_RECONNECTS.inc()
                logs.event("db.reconnecting", what="start_tasks", error=type(exc).__name__)
                return None, RECONNECT_BACKOFF_CAP
            if isinstance(exc, asyncpg.PostgresError):
                logs.event("claim.failed", logging.WARNING, flow=self.flow.slug,
                           error=type(exc).__name__, sqlstate=exc.sqlstate,
                           message=str(exc).split("\n", 1)[0][:200])
                return None, CLAIM_FAILED_BACKOFF_CAP
            raise

    def _task(self, row: Mapping[str, Any]) -> ClaimedTask:
        task = ClaimedTask(self.flow, self.worker_id, row["msg_id"], row["run_id"],
                           row["step_slug"], row["task_index"], row["attempt"], row["input"],
                           row["flow_input"], row["timeout"], row["isolated"])
        step = self.flow.steps.get(task.step_slug)
        if step is not None and step.step_type == "single" and not step.deps:
            task.flow_input = task.input  # a root step's input is the flow input
        elif row["fetch_flow_input"]:
            task.flow_input = None  # large: filled in from the run, once per run
            task.fetch_flow_input = True
        if task.isolated:
            task.finished = asyncio.Event()  # _claim_round waits for it
        return task

    async def _fill_flow_inputs(self, tasks: list[ClaimedTask]) -> None:
        """Give the tasks whose flow input was left behind their run's input.
        If it cannot be read now they are handed back (without spending an
        attempt) rather than run without it."""
        runs = {task.run_id for task in tasks if task.fetch_flow_input}
        if not runs:
            return
        try:
            inputs = await self.flow_inputs.get(runs)
        except Exception as exc:
            if not (is_retryable(exc) or isinstance(exc, asyncpg.PostgresError)):
                raise
            logs.event("flow_input.unavailable", logging.WARNING, flow=self.flow.slug,
                       error=type(exc).__name__, tasks=len(tasks))
            for task in tasks:
                if task.fetch_flow_input:
                    task.cancel("release")
            return
        for task in tasks:
            if task.fetch_flow_input:
                task.flow_input = inputs[task.run_id]

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
        low, high = self.config.poll_min, self.config.poll_max
        if self.notify_works():
            # The fallback poll: NOTIFY is only a hint.
            return random.uniform(high / 2, high)  # noqa: S311
        # Decorrelated jitter between the bounds; reset to low when work is found.
        self._interval = min(high, random.uniform(low, self._interval * 3))  # noqa: S311
        return self._interval
