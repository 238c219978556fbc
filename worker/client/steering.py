"""Steer runs that live: cancel, retry, pause and resume them (or a whole
flow), and signal their wait steps. Each needs the flowworker_operator role
(cancel: flowworker_enqueuer too). A run that is not in a status the action
applies to is a RunStateError naming its status; an unknown run, flow or step
is UnknownRunError / UnknownFlowError / UnknownStepError."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

import psycopg

from flowworker.client._calls import (
    Run,
    encoded,
    mapped_errors,
    run_call,
    run_call_async,
    run_id_of,
    sql,
)
from flowworker.errors import UnknownFlowError, UnknownRunError

Signalled = Literal["signalled", "already"]
RunAction = Literal["retry", "pause", "resume"]


def cancel_run(conn: psycopg.Connection[Any], run_id: UUID | str,
               reason: str | None = None) -> Run:
    """Cancel a run that has not finished (kept with `reason` on the run and
    in its history); a finished run is returned unchanged."""
    return run_call(conn, "client_cancel_run", {"run_id": run_id_of(run_id), "reason": reason},
                    UnknownRunError)


async def cancel_run_async(conn: psycopg.AsyncConnection[Any], run_id: UUID | str,
                           reason: str | None = None) -> Run:
    """`cancel_run` for an AsyncConnection."""
    return await run_call_async(conn, "client_cancel_run",
                                {"run_id": run_id_of(run_id), "reason": reason}, UnknownRunError)


def retry_run(conn: psycopg.Connection[Any], run_id: UUID | str) -> Run:
    """A failed or cancelled run starts again from where it stopped."""
    return _act(conn, "retry", run_id)


def pause_run(conn: psycopg.Connection[Any], run_id: UUID | str) -> Run:
    """Nothing of the run is claimed until resume_run (running tasks finish)."""
    return _act(conn, "pause", run_id)


def resume_run(conn: psycopg.Connection[Any], run_id: UUID | str) -> Run:
    """A paused run goes on exactly where it stopped."""
    return _act(conn, "resume", run_id)


async def retry_run_async(conn: psycopg.AsyncConnection[Any], run_id: UUID | str) -> Run:
    return await _act_async(conn, "retry", run_id)


async def pause_run_async(conn: psycopg.AsyncConnection[Any], run_id: UUID | str) -> Run:
    return await _act_async(conn, "pause", run_id)


async def resume_run_async(conn: psycopg.AsyncConnection[Any], run_id: UUID | str) -> Run:
    return await _act_async(conn, "resume", run_id)


def _act(conn: psycopg.Connection[Any], action: RunAction, run_id: UUID | str) -> Run:
    return run_call(conn, f"client_{action}_run", {"run_id": run_id_of(run_id)},
                    UnknownRunError)


async def _act_async(conn: psycopg.AsyncConnection[Any], action: RunAction,
                     run_id: UUID | str) -> Run:
    return await run_call_async(conn, f"client_{action}_run", {"run_id": run_id_of(run_id)},
                                UnknownRunError)


def pause_flow(conn: psycopg.Connection[Any], flow_slug: str) -> None:
    """None of the flow's tasks is claimed until resume_flow; runs may still start."""
    with mapped_errors(UnknownFlowError):
        conn.execute(sql("client_pause_flow"), {"flow_slug": flow_slug})


def resume_flow(conn: psycopg.Connection[Any], flow_slug: str) -> None:
    with mapped_errors(UnknownFlowError):
        conn.execute(sql("client_resume_flow"), {"flow_slug": flow_slug})


def signal(conn: psycopg.Connection[Any], run_id: UUID | str, step_slug: str,
           payload: Any = None) -> Signalled:
    """Complete a waiting wait step with `payload` as its output: 'signalled',
    or 'already' when it was signalled before."""
    params = {"run_id": run_id_of(run_id), "step_slug": step_slug,
              "payload": encoded(f"the signal for step {step_slug!r}", payload)}
    with mapped_errors(UnknownRunError):
        row = conn.execute(sql("client_signal"), params).fetchone()
    return _signalled(row)


async def signal_async(conn: psycopg.AsyncConnection[Any], run_id: UUID | str, step_slug: str,
                       payload: Any = None) -> Signalled:
    params = {"run_id": run_id_of(run_id), "step_slug": step_slug,
              "payload": encoded(f"the signal for step {step_slug!r}", payload)}
    with mapped_errors(UnknownRunError):
        cur = await conn.execute(sql("client_signal"), params)
        row = await cur.fetchone()
    return _signalled(row)


def signal_token(conn: psycopg.Connection[Any], token: UUID | str,
                 payload: Any = None) -> Signalled:
    """signal() by the step's wait_token alone (what a webhook URL can carry)."""
    params = {"token": run_id_of(token), "payload": encoded("the signal", payload)}
    with mapped_errors(UnknownRunError):
        row = conn.execute(sql("client_signal_token"), params).fetchone()
    return _signalled(row)


def _signalled(row: tuple[Any, ...] | None) -> Signalled:
    assert row is not None
    result: Signalled = row[0]
    return result
