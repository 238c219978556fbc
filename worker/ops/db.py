"""How flowworker.ops reads: the named queries of sql/queries/ops.sql, each
planned with its values, and psycopg's errors turned into flowworker's."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import RowFactory, tuple_row

from flowworker.dsl import SLUG_PATTERN
from flowworker.errors import (
    DatabaseError,
    DatabaseUnreachableError,
    InvalidInputError,
    SchemaError,
)
from flowworker.schema import queries

_NO_SCHEMA = (pg_errors.InvalidSchemaName, pg_errors.UndefinedTable,
              pg_errors.UndefinedFunction, pg_errors.UndefinedColumn)


def fetch(conn: psycopg.Connection[Any], name: str, params: Mapping[str, Any] | None = None,
          row_factory: RowFactory[Any] = tuple_row) -> list[Any]:
    """All rows of the named query. prepare=False: planned with these
    values every time (see the head of ops.sql), never as a generic plan."""
    with mapped_errors(conn), conn.cursor(row_factory=row_factory) as cur:
        cur.execute(queries()[name], params or {}, prepare=False)
        return cur.fetchall()


def fetch_one(conn: psycopg.Connection[Any], name: str,
              params: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
    rows = fetch(conn, name, params)
    if len(rows) != 1:
        raise DatabaseError(f"{name}: expected one row, got {len(rows)}")
    return tuple(rows[0])


def database_now(conn: psycopg.Connection[Any]) -> datetime:
    """The database's clock: filters and ages are measured by it."""
    now: datetime = fetch_one(conn, "ops_now")[0]
    return now


def queue_query(flow_slug: str) -> sql.Composed:
    """ops_queue over the flow's queue table: the one identifier filled in,
    and only after the slug passed the allow-list."""
    if not SLUG_PATTERN.fullmatch(flow_slug):
        raise InvalidInputError(f"invalid flow slug {flow_slug!r}")
    return sql.SQL(queries()["ops_queue"]).format(queue=sql.Identifier(f"q_{flow_slug}"))


def fetch_composed(conn: psycopg.Connection[Any], query: sql.Composed) -> tuple[Any, ...]:
    with mapped_errors(conn):
        row = conn.execute(query, prepare=False).fetchone()
    assert row is not None  # an aggregate without GROUP BY
    return tuple(row)


@contextmanager
def mapped_errors(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A missing schema is SchemaError (exit 4), a lost connection
    DatabaseUnreachableError (3), anything else the database refused
    DatabaseError (1), each with the database's first line."""
    try:
        yield
    except _NO_SCHEMA as exc:
        raise SchemaError(f"flowworker schema is not installed or outdated "
                          f"({_message(exc)}); run `flowworker migrate`") from None
    except pg_errors.InsufficientPrivilege as exc:
        raise DatabaseError(f"{_message(exc)} (reading needs flowworker_reader, starting and "
                            "cancelling runs flowworker_enqueuer, steering runs and pruning "
                            "flowworker_operator)"
                            ) from None
    except psycopg.Error as exc:
        if conn.closed:
            raise DatabaseUnreachableError(
                f"database connection lost: {_message(exc)}") from None
        raise DatabaseError(_message(exc)) from None


def _message(exc: psycopg.Error) -> str:
    lines = str(exc).strip().splitlines()
    return (exc.diag.message_primary if exc.diag else None) or (lines[0] if lines else "failed")
