"""Start, steer and read runs from application code, over psycopg 3.

Every function runs on the connection it is given and never commits: a run
started inside the caller's transaction exists only if that transaction
commits, so a run can be started atomically with the caller's own writes.

    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("INSERT INTO orders ...")
        run = start_flow(conn, "orders", {"order_id": 1})

Errors the database raises about the arguments become flowworker errors and
keep the database's message: an unknown flow is UnknownFlowError, an unknown
run UnknownRunError, an unknown step UnknownStepError, a run in a status the
action does not apply to RunStateError, a bad slug, run_id, input or payload
InvalidInputError, and a database without the flowworker schema SchemaError.
Every other psycopg error (a serialization failure, a lost connection, ...)
is raised unchanged, so the caller's own retry logic still sees the class it
expects. Each function has an `_async` twin for psycopg's AsyncConnection.
"""

from flowworker.client._calls import Run
from flowworker.client.reading import (
    get_run,
    get_run_async,
    list_runs,
    wait_for_run,
    wait_for_run_async,
)
from flowworker.client.starting import start_flow, start_flow_async, start_flows
from flowworker.client.steering import (
    cancel_run,
    cancel_run_async,
    pause_flow,
    pause_run,
    pause_run_async,
    resume_flow,
    resume_run,
    resume_run_async,
    retry_run,
    retry_run_async,
    signal,
    signal_async,
    signal_token,
)

__all__ = [
    "Run", "cancel_run", "cancel_run_async", "get_run", "get_run_async", "list_runs",
    "pause_flow", "pause_run", "pause_run_async", "resume_flow", "resume_run",
    "resume_run_async", "retry_run", "retry_run_async", "signal", "signal_async",
    "signal_token", "start_flow", "start_flow_async", "start_flows", "wait_for_run",
    "wait_for_run_async",
]
