"""A claimed task and what became of it.

These are made and read once per task, thousands of times a second, so they
are slotted dataclasses and use asyncio directly (the worker always runs on
asyncio): anyio's primitives look up the running backend on every call,
which costs as much as a no-op task.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from flowworker.dsl import Flow

# How an outcome is written back: completed/error/timeout are acknowledged,
# release hands the claim back unspent (shutdown), discard drops it (its run
# ended meanwhile).
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
    fetch_flow_input: bool = False  # start_tasks left the (large) flow input to be fetched
    started: bool = False
    cancel_reason: Kind | None = None
    handle: asyncio.Task[None] | None = None  # the asyncio task running it
    finished: asyncio.Event | None = None  # made only for those someone waits on
    deadline: float | None = None  # monotonic time its running handler is cancelled at
    timed_out: bool = False
    thread_overrun: bool = False  # its abandoned thread still runs, holding the slot

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


@dataclass(slots=True)
class Outcome:
    """What became of one claim; `kind` decides how it is written back."""

    task: ClaimedTask
    kind: Kind
    output_json: str | None = None
    error: str | None = None
    duration: float = 0.0
    retry_after: int | None = None  # seconds until the retry, instead of the backoff
    final: bool = False  # fail the task now, whatever attempts are left
