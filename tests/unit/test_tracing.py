"""Tracing with the `otel` extra: one span per attempt, in the run's trace,
with the step's attributes and an error status when the attempt failed;
without the extra the worker imports nothing and runs tasks as before."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flowworker import Context, Flow
from flowworker.daemon import tracing
from flowworker.daemon.claims import ClaimedTask
from flowworker.daemon.executor import HandlerThreads, Limits, execute

flow = Flow("traced", timeout=30)
exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(_provider)


@flow.step()
async def fine(_input: Any, _ctx: Context) -> int:
    return 1


@flow.step()
async def broken(_input: Any, _ctx: Context) -> int:
    raise ValueError("no stock")


def claimed(step: str, run_id: uuid.UUID, attempt: int = 1) -> ClaimedTask:
    return ClaimedTask(flow, uuid.uuid4(), 1, run_id, step, 2, attempt, {}, {}, 30)


async def attempt(task: ClaimedTask) -> None:
    limits = Limits(threads=HandlerThreads(1, give_slot=lambda: None), max_output_bytes=1 << 20)
    await tracing.traced(task, execute(task, limits))


async def test_a_span_per_attempt_in_the_runs_trace() -> None:
    exporter.clear()
    run_id = uuid.uuid4()
    await attempt(claimed("fine", run_id))
    await attempt(claimed("broken", run_id, attempt=3))
    ok, failed = exporter.get_finished_spans()
    assert ok.context.trace_id == failed.context.trace_id == run_id.int
    assert ok.name == "traced.fine"
    assert dict(ok.attributes or {}) == {
        "flowworker.flow": "traced", "flowworker.step": "fine",
        "flowworker.run_id": str(run_id), "flowworker.task_index": 2,
        "flowworker.attempt": 1, "flowworker.outcome": "completed"}
    assert ok.status.status_code is trace.StatusCode.UNSET
    assert dict(failed.attributes or {})["flowworker.attempt"] == 3
    assert dict(failed.attributes or {})["flowworker.outcome"] == "error"
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert "no stock" in (failed.status.description or "")


async def test_runs_have_separate_traces() -> None:
    exporter.clear()
    await attempt(claimed("fine", uuid.uuid4()))
    await attempt(claimed("fine", uuid.uuid4()))
    first, second = exporter.get_finished_spans()
    assert first.context.trace_id != second.context.trace_id


def test_without_the_extra_tasks_run_untraced() -> None:
    script = textwrap.dedent("""
        import sys
        sys.modules["opentelemetry"] = None  # as if the extra were not installed
        import asyncio, uuid
        from flowworker import Flow
        from flowworker.daemon import tracing
        from flowworker.daemon.claims import ClaimedTask
        from flowworker.daemon.executor import HandlerThreads, Limits, execute
        flow = Flow("plain")
        @flow.step()
        async def one(_input, _ctx):
            return 1
        task = ClaimedTask(flow, uuid.uuid4(), 1, uuid.uuid4(), "one", 0, 1, {}, {}, 30)
        limits = Limits(threads=HandlerThreads(1, give_slot=lambda: None), max_output_bytes=1024)
        outcome = asyncio.run(execute(task, limits))
        print(tracing.ENABLED, outcome.kind, outcome.output_json)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["False", "completed", "1"]


def test_no_span_until_the_application_sets_a_tracer_provider() -> None:
    # The API alone (another package's dependency) drops every span: making
    # them would only cost the task path. A fresh process: this module has
    # set a provider in its own.
    script = textwrap.dedent("""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from flowworker.daemon import tracing
        before = tracing.active()
        trace.set_tracer_provider(TracerProvider())
        print(tracing.ENABLED, before, tracing.active())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["True", "False", "True"]
