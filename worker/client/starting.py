"""Start runs: one, or a batch in one statement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg

from flowworker.client._calls import (
    RUN_ROW,
    Run,
    encoded,
    mapped_errors,
    run_call,
    run_call_async,
    run_id_of,
    sql,
)
from flowworker.errors import InvalidInputError, UnknownFlowError


def start_flow(conn: psycopg.Connection[Any], flow_slug: str, input: Any = None,
               run_id: UUID | str | None = None) -> Run:
    """Start a run of `flow_slug` with `input` (any JSON value; None means `{}`).

    With the run_id of an existing run of this flow and the same input,
    return that run unchanged (an idempotent start); with another input it
    is an InvalidInputError naming the run.
    """
    return run_call(conn, "client_start_flow", _start_params(flow_slug, input, run_id),
                    UnknownFlowError)


async def start_flow_async(conn: psycopg.AsyncConnection[Any], flow_slug: str,
                           input: Any = None, run_id: UUID | str | None = None) -> Run:
    """`start_flow` for an AsyncConnection."""
    return await run_call_async(conn, "client_start_flow",
                                _start_params(flow_slug, input, run_id), UnknownFlowError)


def start_flows(conn: psycopg.Connection[Any], flow_slug: str, inputs: Sequence[Any],
                run_ids: Sequence[UUID | str] | None = None) -> list[Run]:
    """Start one run of `flow_slug` per input, in one statement; the runs in
    input order. Every input is checked first: a bad one starts none.
    With run_ids (one per input), existing runs of this flow come back unchanged."""
    params = _starts_params(flow_slug, inputs, run_ids)
    with mapped_errors(UnknownFlowError), conn.cursor(row_factory=RUN_ROW) as cur:
        cur.execute(sql("client_start_flows"), params)
        return cur.fetchall()


def _start_params(flow_slug: str, input: Any, run_id: UUID | str | None) -> dict[str, Any]:
    return {"flow_slug": flow_slug, "input": encoded(f"flow {flow_slug!r}: input", input),
            "run_id": None if run_id is None else run_id_of(run_id)}


def _starts_params(flow_slug: str, inputs: Sequence[Any],
                   run_ids: Sequence[UUID | str] | None) -> dict[str, Any]:
    if run_ids is not None and len(run_ids) != len(inputs):
        raise InvalidInputError(f"flow {flow_slug!r}: {len(inputs)} inputs and "
                                f"{len(run_ids)} run ids; give one run id per input")
    return {"flow_slug": flow_slug,
            "inputs": [encoded(f"flow {flow_slug!r}: input", i) for i in inputs],
            "run_ids": None if run_ids is None else [run_id_of(r) for r in run_ids]}
