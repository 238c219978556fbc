"""Start, cancel and read runs from application code, over psycopg 3.

Every function runs on the connection it is given and never commits: a run
started inside the caller's transaction exists only if that transaction
commits, so a run can be started atomically with the caller's own writes.

    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("INSERT INTO orders ...")
        run = start_flow(conn, "orders", {"order_id": 1})

Errors the database raises about the arguments become flowworker errors and
keep the database's message: an unknown flow is UnknownFlowError, an unknown
run UnknownRunError, a bad slug, run_id or input InvalidInputError, and a
database without the flowworker schema SchemaError. Every other psycopg error
(a serialization failure, a lost connection, ...) is raised unchanged, so the
caller's own retry logic still sees the class it expects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import class_row

from flowworker.errors import (
    FlowworkerError,
    InvalidInputError,
    SchemaError,
    UnknownFlowError,
    UnknownRunError,
)
from flowworker.schema import queries


@dataclass(frozen=True)
class Run:
    """One row of flowworker.runs, as the client returns it."""

    run_id: UUID
    flow_slug: str
    status: str
    input: Any
    output: Any
    error_message: str | None
    started_at: datetime
    completed_at: datetime | None
    failed_at: datetime | None
    cancelled_at: datetime | None


_RUN_ROW = class_row(Run)

# SQLSTATEs that say the caller's arguments are wrong (see sql/schema/04*).
_INVALID_INPUT = (
    pg_errors.InvalidParameterValue,  # 22023: bad slug, or a root map over a non-array
    pg_errors.NullValueNotAllowed,  # 22004: input is SQL NULL
    pg_errors.InvalidTextRepresentation,  # 22P02: malformed uuid or json
    pg_errors.UniqueViolation,  # 23505: run_id belongs to another flow
)
# The schema or the function is missing: flowworker is not installed here.
_NO_SCHEMA = (pg_errors.InvalidSchemaName, pg_errors.UndefinedFunction,
              pg_errors.UndefinedTable)


def start_flow(conn: psycopg.Connection[Any], flow_slug: str, input: Any = None,
               run_id: UUID | str | None = None) -> Run:
    """Start a run of `flow_slug` with `input` (any JSON value; None means `{}`).

    With the run_id of an existing run of this flow, return that run
    unchanged (an idempotent start).
    """
    params = _start_params(flow_slug, input, run_id)
    with _mapped_errors(UnknownFlowError), conn.cursor(row_factory=_RUN_ROW) as cur:
        cur.execute(queries()["client_start_flow"], params)
        return _one(cur.fetchone(), UnknownFlowError)


def start_flows(conn: psycopg.Connection[Any], flow_slug: str, inputs: Sequence[Any],
                run_ids: Sequence[UUID | str] | None = None) -> list[Run]:
    """Start one run of `flow_slug` per input, in one statement; the runs in
    input order. Every input is checked first: a bad one starts none.
    With run_ids (one per input), existing runs of this flow come back unchanged."""
    params = _starts_params(flow_slug, inputs, run_ids)
    with _mapped_errors(UnknownFlowError), conn.cursor(row_factory=_RUN_ROW) as cur:
        cur.execute(queries()["client_start_flows"], params)
        return cur.fetchall()


def cancel_run(conn: psycopg.Connection[Any], run_id: UUID | str) -> Run:
    """Cancel a run that has not finished; a finished run is returned unchanged."""
    params = {"run_id": _run_id(run_id)}
    with _mapped_errors(UnknownRunError), conn.cursor(row_factory=_RUN_ROW) as cur:
        cur.execute(queries()["client_cancel_run"], params)
        return _one(cur.fetchone(), UnknownRunError)


def get_run(conn: psycopg.Connection[Any], run_id: UUID | str) -> Run | None:
    """The run with this run_id, or None when there is none."""
    params = {"run_id": _run_id(run_id)}
    with _mapped_errors(UnknownRunError), conn.cursor(row_factory=_RUN_ROW) as cur:
        cur.execute(queries()["client_get_run"], params)
        return cur.fetchone()


async def start_flow_async(conn: psycopg.AsyncConnection[Any], flow_slug: str,
                           input: Any = None, run_id: UUID | str | None = None) -> Run:
    """`start_flow` for an AsyncConnection."""
    params = _start_params(flow_slug, input, run_id)
    with _mapped_errors(UnknownFlowError):
        async with conn.cursor(row_factory=_RUN_ROW) as cur:
            await cur.execute(queries()["client_start_flow"], params)
            return _one(await cur.fetchone(), UnknownFlowError)


async def cancel_run_async(conn: psycopg.AsyncConnection[Any], run_id: UUID | str) -> Run:
    """`cancel_run` for an AsyncConnection."""
    params = {"run_id": _run_id(run_id)}
    with _mapped_errors(UnknownRunError):
        async with conn.cursor(row_factory=_RUN_ROW) as cur:
            await cur.execute(queries()["client_cancel_run"], params)
            return _one(await cur.fetchone(), UnknownRunError)


async def get_run_async(conn: psycopg.AsyncConnection[Any], run_id: UUID | str) -> Run | None:
    """`get_run` for an AsyncConnection."""
    params = {"run_id": _run_id(run_id)}
    with _mapped_errors(UnknownRunError):
        async with conn.cursor(row_factory=_RUN_ROW) as cur:
            await cur.execute(queries()["client_get_run"], params)
            return await cur.fetchone()


def _start_params(flow_slug: str, input: Any, run_id: UUID | str | None) -> dict[str, Any]:
    return {"flow_slug": flow_slug, "input": _encoded(flow_slug, input),
            "run_id": None if run_id is None else _run_id(run_id)}


def _starts_params(flow_slug: str, inputs: Sequence[Any],
                   run_ids: Sequence[UUID | str] | None) -> dict[str, Any]:
    if run_ids is not None and len(run_ids) != len(inputs):
        raise InvalidInputError(f"flow {flow_slug!r}: {len(inputs)} inputs and "
                                f"{len(run_ids)} run ids; give one run id per input")
    return {"flow_slug": flow_slug, "inputs": [_encoded(flow_slug, i) for i in inputs],
            "run_ids": None if run_ids is None else [_run_id(r) for r in run_ids]}


def _encoded(flow_slug: str, input: Any) -> str:
    try:
        return json.dumps({} if input is None else input, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"flow {flow_slug!r}: input is not JSON: {exc}") from None


def _run_id(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidInputError(f"invalid run_id {value!r}: not a UUID") from None


def _one(row: Run | None, not_found: type[FlowworkerError]) -> Run:
    if row is None:  # the functions return a row or raise; this guards the contract
        raise not_found()
    return row


@contextmanager
def _mapped_errors(not_found: type[FlowworkerError]) -> Iterator[None]:
    """Turn the database's complaints about the arguments into flowworker errors.

    `not_found` is what SQLSTATE P0002 (no_data_found) means for this call.
    """
    try:
        yield
    except pg_errors.NoDataFound as exc:
        raise not_found(_message(exc)) from exc
    except _INVALID_INPUT as exc:
        raise InvalidInputError(_message(exc)) from exc
    except _NO_SCHEMA as exc:
        raise SchemaError(
            f"flowworker schema is not installed or outdated ({_message(exc)}); "
            "run `flowworker migrate`") from exc


def _message(exc: psycopg.Error) -> str:
    return exc.diag.message_primary or str(exc).strip().splitlines()[0]
