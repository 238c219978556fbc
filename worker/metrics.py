"""Prometheus metrics: names flowworker_*, seconds, labels flow/step/outcome."""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

TASKS_STARTED = Counter(
    "flowworker_tasks_started", "Tasks whose handler started.", ["flow", "step"],
    registry=REGISTRY)
TASKS_COMPLETED = Counter(
    "flowworker_tasks_completed", "Tasks completed (applied).", ["flow", "step"],
    registry=REGISTRY)
TASKS_FAILED = Counter(
    "flowworker_tasks_failed", "Failed attempts by outcome: retry, exhausted, timeout, stale.",
    ["flow", "step", "outcome"], registry=REGISTRY)
TASK_DURATION = Histogram(
    "flowworker_task_duration_seconds", "Handler run time.", ["flow", "step"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300), registry=REGISTRY)
TASK_QUEUE_WAIT = Histogram(
    "flowworker_task_queue_wait_seconds", "Time from a task becoming visible to its claim.",
    ["flow"], buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
    registry=REGISTRY)
IN_FLIGHT = Gauge("flowworker_tasks_in_flight",
                  "Tasks the worker holds: claimed, and their outcome not yet written back.",
                  ["flow"], registry=REGISTRY)
# Read with each heartbeat rather than on scrape: a scrape never waits for
# the database, and a dozen scrapers cost no queries.
QUEUE_DEPTH = Gauge(
    "flowworker_queue_depth", "Messages in the flow's queue (ready, delayed or claimed), as "
    "read at the worker's last heartbeat: up to FLOWWORKER_HEARTBEAT_INTERVAL (5 s) old.",
    ["flow"],
    registry=REGISTRY)
QUEUE_OLDEST_AGE = Gauge(
    "flowworker_queue_oldest_message_age_seconds", "Age of the oldest message in the flow's "
    "queue, as read at the worker's last heartbeat: up to FLOWWORKER_HEARTBEAT_INTERVAL (5 s) "
    "old.", ["flow"], registry=REGISTRY)
LISTENER_UP = Gauge("flowworker_listener_up", "1 while the LISTEN connection is up.",
                    registry=REGISTRY)
DB_RECONNECTS = Counter(
    "flowworker_db_reconnects", "Times the worker lost (or could not get) a database "
    "connection and tried again on a new one: a claim, an acknowledgement or another call "
    "retried, a missed heartbeat, the LISTEN connection reconnecting. Each is also logged "
    "(db.reconnecting, worker.heartbeat_missed, listener.lost).", registry=REGISTRY)
THREADS_OVERRUNNING = Gauge(
    "flowworker_handler_threads_overrunning",
    "Threads of plain def handlers still running after their task timed out or was "
    "handed back; each keeps a thread and a slot until it returns.", registry=REGISTRY)
LOOP_LAG = Histogram("flowworker_event_loop_lag_seconds", "Event loop lateness.",
                     buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5), registry=REGISTRY)


class StepMetrics(NamedTuple):
    """The labelled children of one step, looked up once: a labels() call
    costs as much as the rest of a no-op task's bookkeeping."""

    started: Counter
    completed: Counter
    duration: Histogram


@cache
def for_step(flow: str, step: str) -> StepMetrics:
    return StepMetrics(TASKS_STARTED.labels(flow, step), TASKS_COMPLETED.labels(flow, step),
                       TASK_DURATION.labels(flow, step))


@cache
def in_flight(flow: str) -> Gauge:
    return IN_FLIGHT.labels(flow)


@cache
def queue_wait(flow: str) -> Histogram:
    return TASK_QUEUE_WAIT.labels(flow)
