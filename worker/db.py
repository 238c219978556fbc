"""psycopg connections for the CLI, migrations and application code."""

from __future__ import annotations

import psycopg

from flowworker.errors import DatabaseUnreachableError


def connect(database_url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """Connect, turning a failure to connect into DatabaseUnreachableError."""
    try:
        return psycopg.connect(database_url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no answer"
        raise DatabaseUnreachableError(f"database unreachable: {reason}") from None
