"""What the worker holds in memory: claimed tasks, their outcomes, free slots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import anyio

from flowworker.dsl import Flow

Kind = Literal["completed", "error", "timeout", "release", "discard"]


@dataclass(eq=False)
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
    finished: anyio.Event = field(default_factory=anyio.Event)
    cancel_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    cancel_reason: Kind | None = None

    def cancel(self, reason: Kind) -> None:
        """Stop the handler: `discard` when the run ended, `release` on shutdown."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self.cancel_scope.cancel()

    def fields(self) -> dict[str, Any]:
        return {"flow": self.flow.slug, "step": self.step_slug, "run_id": str(self.run_id),
                "task_index": self.task_index, "attempt": self.attempt}


@dataclass
class Outcome:
    """What became of one claim; `kind` decides how it is written back."""

    task: ClaimedTask
    kind: Kind
    output_json: str | None = None
    error: str | None = None
    duration: float = 0.0


class Slots:
    """How many more tasks this worker may hold (--concurrency)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._changed = anyio.Condition()

    @property
    def free(self) -> int:
        return self.total - self.used

    def take(self, count: int = 1) -> None:
        self.used += count

    async def give(self, count: int = 1) -> None:
        """Return slots and wake everyone waiting for one (other flows' producers too)."""
        async with self._changed:
            self.used -= count
            self._changed.notify_all()

    async def wait_free(self, at_least: int = 1) -> None:
        async with self._changed:
            while self.free < at_least:
                await self._changed.wait()

    async def wait_empty(self) -> None:
        async with self._changed:
            while self.used > 0:
                await self._changed.wait()
