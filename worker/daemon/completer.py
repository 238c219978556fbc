"""Write outcomes back: batched, retried through connection loss, shielded."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Literal
from uuid import UUID

import anyio
import asyncpg

from flowworker import logs, metrics
from flowworker.daemon.claims import ClaimedTask, Outcome
from flowworker.daemon.db_asyncpg import GaveUpError, Queries, backoff
from flowworker.daemon.outcomes import OutcomeQueue

MAX_BATCH = 200
BUSY_RETRY_CAP = 2.0  # seconds: the longest wait before outcomes of a held run are sent again

# What ack_tasks answers for each outcome (sql/schema/0550_function_ack_tasks.sql);
# `busy` is not final (the run's row was held): the outcome is sent again.
Applied = Literal["completed", "retry", "failed", "stale"]
AckResult = Applied | Literal["busy"]

_FAILED_OUTCOME = {"retry": "retry", "failed": "exhausted", "stale": "stale"}


class Completer:
    """Drains the outcome stream into ack_tasks / release_tasks calls.

    settle(task) is called once for each outcome it is done with (written,
    or given up); run_failed(run_id) when an outcome failed its run, so that
    the run's other handlers are stopped."""

    def __init__(self, db: Queries, outcomes: OutcomeQueue,
                 settle: Callable[[ClaimedTask], None],
                 run_failed: Callable[[UUID], None],
                 give_up: Callable[[], bool] = lambda: False,
                 seconds_to_give_up: Callable[[], float] = lambda: math.inf) -> None:
        self.db = db
        self.give_up = give_up
        self.seconds_to_give_up = seconds_to_give_up
        self.outcomes = outcomes
        self.settle = settle
        self.run_failed = run_failed
        # Outcomes whose run another transaction held: sent again at _busy_due.
        self._busy: list[Outcome] = []
        self._busy_due = 0.0
        self._busy_rounds = 0

    async def run(self) -> None:
        """Until the queue closes: take what is waiting (up to MAX_BATCH) and write it."""
        while batch := await self._take():
            # Once handed over, an outcome is written even if we are being cancelled.
            with anyio.CancelScope(shield=True):
                busy: list[Outcome] = []
                try:
                    busy = await self.write(batch)
                except GaveUpError:
                    # Unwritten claims expire and are redelivered elsewhere.
                    for outcome in batch:
                        logs.event("task.unwritten", **outcome.task.fields())
                finally:
                    waiting = {id(outcome) for outcome in busy}
                    for outcome in batch:
                        if id(outcome) not in waiting:
                            self.settle(outcome.task)
                self._defer(busy)

    def _defer(self, busy: list[Outcome]) -> None:
        """Hold outcomes of runs held elsewhere, to send again after a backoff
        (beside any still waiting from an earlier batch)."""
        if not busy:
            if not self._busy:
                self._busy_rounds = 0
            return
        logs.event("task.ack_deferred", count=len(busy), run_id=str(busy[0].task.run_id),
                   hint="another transaction holds the run's row")
        if not self._busy:
            self._busy_due = (anyio.current_time()
                              + backoff(self._busy_rounds, 0.02, BUSY_RETRY_CAP))
            self._busy_rounds += 1
        self._busy += busy

    async def _take(self) -> list[Outcome]:
        """New outcomes as they come; deferred ones once due, with whatever is new.
        Empty once the queue is closed and nothing is left to write."""
        while True:
            if not self._busy:
                return await self.outcomes.take(MAX_BATCH)
            fresh: list[Outcome] = []
            # Past the give-up time nothing deferred is sent again: do not sit
            # out the rest of a backoff (up to BUSY_RETRY_CAP) before exiting.
            wait = min(self._busy_due - anyio.current_time(), self.seconds_to_give_up())
            with anyio.move_on_after(wait):
                fresh = await self.outcomes.take(MAX_BATCH - len(self._busy))
                if not fresh:  # closed: nothing new will come, wait for the due time
                    await anyio.sleep_forever()
            if fresh and anyio.current_time() < self._busy_due:
                return fresh
            busy, self._busy = self._busy, []
            if self.give_up():
                # Past the drain timeout: their claims expire and are redelivered.
                for outcome in busy:
                    logs.event("task.unwritten", **outcome.task.fields())
                    self.settle(outcome.task)
                busy = []
            if busy or fresh:
                return busy + fresh

    async def write(self, batch: list[Outcome]) -> list[Outcome]:
        """Write a batch; returns the outcomes whose run was busy (not written)."""
        releases = [o for o in batch if o.kind == "release"]
        acks = [o for o in batch if o.kind in ("completed", "error", "timeout")]
        busy: list[Outcome] = []
        if releases:
            await self._release([o.task for o in releases])
        if acks:
            busy = await self._ack(acks)
        for outcome in batch:
            if outcome.kind == "discard":
                logs.event("task.discarded", **outcome.task.fields())
        return busy

    async def _ack(self, acks: list[Outcome]) -> list[Outcome]:
        try:
            results = await self.db.retrying("ack_tasks", lambda: self._ack_call(acks),
                                             self.give_up)
        except asyncpg.PostgresError as exc:
            return await self._ack_one_by_one(acks, exc)
        completed: Counter[tuple[str, str]] = Counter()
        busy: list[Outcome] = []
        ended: set[UUID] = set()
        for outcome, row in zip(acks, results, strict=True):
            result: AckResult = row["result"]
            if result == "busy":
                busy.append(outcome)
                continue
            if result == "completed":
                completed[outcome.task.flow.slug, outcome.task.step_slug] += 1
            self._report(outcome, result)
            if row["run_status"] is not None and outcome.task.run_id not in ended:
                ended.add(outcome.task.run_id)
                _report_run(outcome.task, row)
        for (flow, step), count in completed.items():  # one locked increment per step
            metrics.for_step(flow, step).completed.inc(count)
        return busy

    async def _ack_one_by_one(self, acks: list[Outcome],
                              exc: asyncpg.PostgresError) -> list[Outcome]:
        """One bad output (e.g. a \\u0000 that jsonb refuses) must not sink the
        batch: write outcomes singly, failing the attempt the database refused."""
        if len(acks) > 1:
            busy: list[Outcome] = []
            for outcome in acks:
                busy += await self._ack([outcome])
            return busy
        outcome = acks[0]
        if outcome.kind != "completed":
            # Even the failure cannot be written: the claim expires and is redelivered.
            logs.event("task.ack_failed", error_type=type(exc).__name__, **outcome.task.fields())
            return []
        outcome.kind, outcome.output_json = "error", None
        outcome.error = f"output refused by the database: {exc}"
        return await self._ack([outcome])

    async def _ack_call(self, acks: list[Outcome]) -> list[Mapping[str, Any]]:
        """ack_tasks' rows (result, and how the outcome's run ended, if it did
        in this call), in the order of acks."""
        rows = await self.db.fetch(
            "ack_tasks",
            [o.task.run_id for o in acks], [o.task.step_slug for o in acks],
            [o.task.task_index for o in acks], [o.task.attempt for o in acks],
            [o.output_json for o in acks], [o.error for o in acks],
            [o.task.worker_id for o in acks], [o.retry_after for o in acks],
            [o.final for o in acks], logs.enabled(logging.INFO))
        by_position = {row["ord"]: row for row in rows}
        return [by_position[i + 1] for i in range(len(acks))]

    async def _release(self, tasks: list[ClaimedTask]) -> None:
        await self.db.retrying("release_tasks", lambda: self.db.fetchval(
            "release_tasks", [t.run_id for t in tasks], [t.step_slug for t in tasks],
            [t.task_index for t in tasks], [t.attempt for t in tasks],
            [t.worker_id for t in tasks]), self.give_up)
        for task in tasks:
            logs.event("task.released", **task.fields())

    def _report(self, outcome: Outcome, result: Applied) -> None:
        task = outcome.task
        if result == "completed":
            # Per-task success events cost as much as the task; DEBUG shows them.
            if logs.enabled(logging.DEBUG):
                logs.event("task.completed", logging.DEBUG, **self._fields(outcome))
        elif result == "stale":
            metrics.TASKS_FAILED.labels(task.flow.slug, task.step_slug, "stale").inc()
            logs.event("task.stale", **self._fields(outcome))
        else:
            label = ("timeout" if outcome.kind == "timeout"
                     else "fail" if outcome.final else _FAILED_OUTCOME[result])
            metrics.TASKS_FAILED.labels(task.flow.slug, task.step_slug, label).inc()
            error_type = (outcome.error or "").split(":", 1)[0]
            logs.event("task.failed", outcome=label, error_type=error_type,
                       **self._fields(outcome))
            if result == "failed":
                self.run_failed(task.run_id)

    @staticmethod
    def _fields(outcome: Outcome) -> dict[str, Any]:
        return {**outcome.task.fields(), "duration_ms": round(outcome.duration * 1000, 3)}


def _report_run(task: ClaimedTask, row: Mapping[str, Any]) -> None:
    """run.completed / run.failed: one INFO event per run that ended."""
    fields: dict[str, Any] = {"flow": task.flow.slug, "run_id": str(task.run_id),
                              "duration_ms": round(row["run_seconds"] * 1000, 3)}
    if row["run_status"] == "failed":
        fields["step"] = row["run_failed_step"]
    logs.event(f"run.{row['run_status']}", **fields)
