"""psycopg connections for the CLI, migrations and application code."""

from __future__ import annotations

import psycopg

from flowworker import connect_errors, dburl


def connect(database_url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """Connect, turning a failure to connect into DatabaseUnreachableError
    (or DatabaseRefusedError: no such database or role, say) and a malformed
    URL into ConfigurationError; none shows the password."""
    dburl.parse(database_url)
    try:
        return psycopg.connect(database_url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        # The first line says what failed ("connection to server at ... failed:
        # Connection refused"); libpq's later lines are generic hints.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = lines[0] if lines else "no answer"
        if first.startswith("connection is bad:"):  # refused before any I/O: an option
            raise dburl.invalid(first.removeprefix("connection is bad:"), database_url) from None
        raise connect_errors.from_libpq(database_url, first) from None
    except psycopg.ProgrammingError as exc:  # the conninfo string does not parse
        raise dburl.invalid(str(exc), database_url) from None
