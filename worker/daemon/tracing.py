"""One OpenTelemetry span per task attempt, with the `otel` extra
(`pip install flowworker[otel]`; the application configures the exporter).

Every attempt of a run is in one trace: its trace id is the run id, so a
tracing UI shows a run's steps, retries and workers together. Span
attributes: flowworker.flow, .step, .run_id, .task_index, .attempt and
.outcome (completed, error, timeout, release, discard). Without the extra
nothing is imported and a task pays one boolean check; with the API but no
tracer provider set by the application (opentelemetry-api is often present
as another package's dependency), spans would be dropped anyway, so none is
made: a task pays a global lookup, not a span's allocations.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from flowworker.daemon.claims import ClaimedTask, Outcome

try:
    from opentelemetry import trace
except ImportError:  # the extra is not installed
    trace = None  # type: ignore[assignment]

ENABLED = trace is not None


def active() -> bool:
    """The application has set a tracer provider, so spans go somewhere.
    Asked per task: the provider may be set after the worker starts."""
    return not isinstance(trace.get_tracer_provider(),
                          trace.ProxyTracerProvider | trace.NoOpTracerProvider)


async def traced(task: ClaimedTask, attempt: Awaitable[Outcome]) -> Outcome:
    """Await the attempt inside its span (ENABLED only)."""
    tracer = trace.get_tracer("flowworker")
    with tracer.start_as_current_span(
            f"{task.flow.slug}.{task.step_slug}", context=_run_context(task),
            kind=trace.SpanKind.CONSUMER, attributes=_attributes(task)) as span:
        outcome = await attempt
        span.set_attribute("flowworker.outcome", outcome.kind)
        if outcome.kind in ("error", "timeout"):
            span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.error))
        return outcome


def _run_context(task: ClaimedTask) -> Any:
    """A remote parent whose trace id is the run id: the run's trace."""
    run = task.run_id.int
    parent = trace.SpanContext(trace_id=run, span_id=(run & ((1 << 64) - 1)) or 1,
                               is_remote=True,
                               trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def _attributes(task: ClaimedTask) -> dict[str, Any]:
    return {"flowworker.flow": task.flow.slug, "flowworker.step": task.step_slug,
            "flowworker.run_id": str(task.run_id), "flowworker.task_index": task.task_index,
            "flowworker.attempt": task.attempt}
