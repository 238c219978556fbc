"""psycopg connections for the CLI, migrations and application code."""

from __future__ import annotations

import psycopg

from flowworker.errors import ConfigurationError, DatabaseUnreachableError


def connect(database_url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """Connect, turning a failure to connect into DatabaseUnreachableError
    and a malformed URL into ConfigurationError."""
    try:
        return psycopg.connect(database_url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        # The first line says what failed ("connection to server at ... failed:
        # Connection refused"); libpq's later lines are generic hints.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise DatabaseUnreachableError(
            f"database unreachable: {lines[0] if lines else 'no answer'}") from None
    except psycopg.ProgrammingError as exc:  # the conninfo string does not parse
        raise ConfigurationError(f"invalid database URL: {exc}") from None
