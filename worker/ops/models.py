"""What the operator views read: plain dataclasses, one per thing shown.

Times are the database's (timestamptz); durations and ages are seconds,
measured by the database clock. Statuses are the database's strings as they
are, so a status this code does not know yet still shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

RUN_STATUSES = ("started", "paused", "completed", "failed", "cancelled")
TERMINAL_RUN_STATUSES = ("completed", "failed", "cancelled")
# Always present in FlowStatus.runs, so scripts find the keys (0 when none).
COUNTED_RUN_STATUSES = ("started", "paused", "failed", "cancelled")


@dataclass(frozen=True)
class QueueDepth:
    """A flow's queue: every message, those ready now, and how long the
    oldest ready one has waited (None when none is ready)."""

    depth: int
    visible: int
    oldest_visible_seconds: float | None


@dataclass(frozen=True)
class FlowInfo:
    flow_slug: str
    steps: int
    max_attempts: int
    base_delay: int
    timeout: int
    created_at: datetime
    queue: QueueDepth
    paused_at: datetime | None  # pause_flow: none of its tasks is claimed since


@dataclass(frozen=True)
class FlowStatus:
    """One flow at a glance. `runs`: every run that is not completed, by
    status (exact); `completed_recently`: completed runs among those started
    within the window, counted up to a cap (`completed_capped` when reached)."""

    flow_slug: str
    runs: dict[str, int]
    completed_recently: int
    completed_capped: bool
    queue: QueueDepth
    live_workers: int


@dataclass(frozen=True)
class Status:
    checked_at: datetime
    window_seconds: float
    completed_cap: int
    flows: list[FlowStatus]


@dataclass(frozen=True)
class RunSummary:
    """A run as lists show it: ended_at is when it completed, failed or was
    cancelled; duration_seconds runs up to now while it goes on."""

    run_id: UUID
    flow_slug: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    duration_seconds: float
    error_message: str | None


@dataclass(frozen=True)
class TaskCounts:
    total: int
    queued: int
    started: int
    completed: int
    failed: int
    cancelled: int


@dataclass(frozen=True)
class StepDetail:
    """One step of a run: its state, its tasks counted, attempts summed over
    them, the newest error of any attempt, and the steps it depends on."""

    step_slug: str
    step_type: str
    status: str | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    last_error: str | None
    tasks: TaskCounts
    attempts: int
    depends_on: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunEvent:
    """One row of the run's history (flowworker.events): detail holds the
    event's own fields (an error, a reason, a signal's option), never payloads."""

    event_id: int
    at: datetime
    event: str
    step_slug: str | None
    task_index: int | None
    attempt: int | None
    detail: Any
    actor: str | None


@dataclass(frozen=True)
class RunDetail:
    run: RunSummary
    input: Any
    output: Any
    remaining_steps: int
    steps: list[StepDetail]
    events: list[RunEvent] = field(default_factory=list)


@dataclass(frozen=True)
class TaskDetail:
    """One task of a run's step (a map step has one per element): attempts
    so far and the error of its last failed attempt."""

    step_slug: str
    task_index: int
    status: str
    attempts: int
    error_message: str | None
    started_at: datetime | None
    ended_at: datetime | None
    worker_id: UUID | None


@dataclass(frozen=True)
class WorkerInfo:
    """state: live (heartbeat within lost_after), lost (not stopped but
    silent: killed, frozen or cut off), or stopped."""

    worker_id: UUID
    flow_slug: str
    hostname: str
    pid: int
    started_at: datetime
    last_heartbeat_at: datetime
    stopped_at: datetime | None
    state: str
    heartbeat_age_seconds: float


@dataclass(frozen=True)
class Health:
    """ok, or the problem and the exit code it means (3 unreachable, 4 schema)."""

    ok: bool
    database_reachable: bool
    schema_version: int | None
    expected_version: int
    problem: str | None
    exit_code: int


@dataclass(frozen=True)
class PrunePreview:
    """What prune would delete now: runs by status, and workers."""

    older_than_seconds: float
    cutoff: datetime
    runs: dict[str, int]
    workers: int

    @property
    def total_runs(self) -> int:
        return sum(self.runs.values())


@dataclass(frozen=True)
class PruneResult:
    """Rows of runs and workers deleted, over how many calls, in seconds;
    the longest call is the longest any row lock was held."""

    deleted: int
    batches: int
    seconds: float
    longest_batch_seconds: float
