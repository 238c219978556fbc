"""What every client call shares: the Run it returns, its arguments, and
the mapping of the database's complaints to flowworker errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
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
    RunStateError,
    SchemaError,
    UnknownStepError,
)
from flowworker.schema import queries


@dataclass(frozen=True)
class Run:
    """One row of flowworker.runs, as the client returns it."""

    run_id: UUID
    flow_slug: str
    status: str  # started, paused, completed, failed or cancelled
    input: Any
    output: Any
    error_message: str | None
    started_at: datetime
    completed_at: datetime | None
    failed_at: datetime | None
    cancelled_at: datetime | None
    paused_at: datetime | None
    cancel_reason: str | None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")


RUN_ROW = class_row(Run)

# SQLSTATEs that say the caller's arguments are wrong (see sql/schema/04*).
_INVALID_INPUT = (
    pg_errors.InvalidParameterValue,  # 22023: a bad slug, option, or payload shape
    pg_errors.NullValueNotAllowed,  # 22004: input is SQL NULL
    pg_errors.InvalidTextRepresentation,  # 22P02: malformed uuid or json
    pg_errors.UniqueViolation,  # 23505: run_id taken by another flow or input
    pg_errors.NumericValueOutOfRange,  # 22003: a number no worker could read back
    pg_errors.ProgramLimitExceeded,  # 54000: over max_input_bytes / max_output_bytes
)
# The schema or the function is missing: flowworker is not installed here.
_NO_SCHEMA = (pg_errors.InvalidSchemaName, pg_errors.UndefinedFunction,
              pg_errors.UndefinedTable)


def sql(name: str) -> str:
    return queries()[name]


def run_id_of(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidInputError(f"invalid run_id {value!r}: not a UUID") from None


def encoded(what: str, value: Any) -> str:
    try:
        return json.dumps({} if value is None else value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} is not JSON: {exc}") from None


def one(row: Run | None, not_found: type[FlowworkerError]) -> Run:
    if row is None:  # the functions return a row or raise; this guards the contract
        raise not_found()
    return row


def run_call(conn: psycopg.Connection[Any], name: str, params: dict[str, Any],
             not_found: type[FlowworkerError]) -> Run:
    """One query that returns one run."""
    with mapped_errors(not_found), conn.cursor(row_factory=RUN_ROW) as cur:
        cur.execute(sql(name), params)
        return one(cur.fetchone(), not_found)


async def run_call_async(conn: psycopg.AsyncConnection[Any], name: str, params: dict[str, Any],
                         not_found: type[FlowworkerError]) -> Run:
    with mapped_errors(not_found):
        async with conn.cursor(row_factory=RUN_ROW) as cur:
            await cur.execute(sql(name), params)
            return one(await cur.fetchone(), not_found)


@contextmanager
def mapped_errors(not_found: type[FlowworkerError]) -> Iterator[None]:
    """Turn the database's complaints about the arguments into flowworker errors.

    `not_found` is what SQLSTATE P0002 (no_data_found) means for this call.
    """
    try:
        yield
    except pg_errors.NoDataFound as exc:
        raise not_found(message(exc)) from exc
    except pg_errors.UndefinedObject as exc:  # 42704: no such step (or wait token)
        raise UnknownStepError(message(exc)) from exc
    except pg_errors.ObjectNotInPrerequisiteState as exc:  # 55000: e.g. retrying a started run
        raise RunStateError(message(exc)) from exc
    except _INVALID_INPUT as exc:
        raise InvalidInputError(message(exc)) from exc
    except _NO_SCHEMA as exc:
        raise SchemaError(
            f"flowworker schema is not installed or outdated ({message(exc)}); "
            "run `flowworker migrate`") from exc


def message(exc: psycopg.Error) -> str:
    return exc.diag.message_primary or str(exc).strip().splitlines()[0]
