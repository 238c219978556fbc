"""Why a connection could not be made, in one line with the right exit code.

A URL that names no such database or role, wrong credentials, or SSL the
server does not offer is a configuration error (exit 2): waiting will not
help, the URL or the server's setup must change. Anything else (refused,
timed out, starting up, too many connections) is the database being
unreachable (exit 3). Both drivers' failures come here: asyncpg's carry
their SQLSTATE; libpq's (psycopg) do not, see LIBPQ_REFUSALS.
"""

from __future__ import annotations

import os
import re
import socket

from flowworker import dburl
from flowworker.errors import DatabaseRefusedError, DatabaseUnreachableError

# SQLSTATE of a refusal at connection time: what the user should check.
REFUSALS = {
    "3D000": "the database name in the URL",  # invalid_catalog_name
    "28000": "the user name in the URL, and pg_hba.conf on the server",  # invalid_authorization
    "28P01": "the user name and password in the URL",  # invalid_password
    "42501": "that the user may CONNECT to the database",  # insufficient_privilege
}
SSL_ADVICE = "the server does not offer SSL: use sslmode=prefer or disable, or enable SSL there"

# libpq reports a refusal at connection time as text only (there is no
# result to read a SQLSTATE from), so psycopg's are told apart by the
# server's words. A server whose lc_messages is not English is reported as
# unreachable (exit 3) instead; asyncpg's errors carry the code either way.
LIBPQ_REFUSALS = (
    (re.compile(r'database ".*" does not exist'), "3D000"),
    (re.compile(r"password authentication failed|no password supplied"), "28P01"),
    (re.compile(r'role ".*" does not exist|no pg_hba\.conf entry|authentication failed'), "28000"),
    (re.compile(r"permission denied for database"), "42501"),
)
LIBPQ_SSL = re.compile(r"does not support SSL")
ASYNCPG_SSL = re.compile(r"rejected SSL upgrade")


def refused(url: str, said: str, sqlstate: str) -> DatabaseRefusedError:
    """`database refused the connection: <what the server said> (SQLSTATE x); check ...`"""
    return DatabaseRefusedError(
        f"database refused the connection: {_clean(said, url)} (SQLSTATE {sqlstate}); "
        f"check {REFUSALS[sqlstate]}")


def ssl_refused(url: str, said: str) -> DatabaseRefusedError:
    return DatabaseRefusedError(f"database refused the connection: {_clean(said, url)}; "
                                f"{SSL_ADVICE}")


def unreachable(url: str, said: str) -> DatabaseUnreachableError:
    return DatabaseUnreachableError(f"database unreachable: {_clean(said, url)}")


def from_libpq(url: str, first_line: str) -> DatabaseRefusedError | DatabaseUnreachableError:
    """psycopg's OperationalError on connect, by its first line."""
    said = first_line.removeprefix("connection failed: ")
    for pattern, sqlstate in LIBPQ_REFUSALS:
        if pattern.search(said):
            return refused(url, said, sqlstate)
    if LIBPQ_SSL.search(said):
        return ssl_refused(url, said)
    return unreachable(url, said)


def from_asyncpg(url: str, exc: BaseException) -> DatabaseRefusedError | DatabaseUnreachableError:
    """asyncpg's failure to connect, by SQLSTATE or exception class; the
    message names the server(s) asyncpg tried, as libpq's does."""
    servers = dburl.servers(url)
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate in REFUSALS:
        return refused(url, f"{servers}: {exc}", sqlstate)
    if ASYNCPG_SSL.search(str(exc)):
        return ssl_refused(url, str(exc))
    if isinstance(exc, TimeoutError):
        reason = "timed out"
    elif isinstance(exc, socket.gaierror):
        reason = str(exc.strerror)  # "Name or service not known"
    elif isinstance(exc, OSError) and exc.errno:
        # asyncio says "[Errno 111] Connect call failed ('127.0.0.1', 5432)"
        reason = os.strerror(exc.errno)
    else:
        reason = str(exc) or type(exc).__name__
    if isinstance(sqlstate, str):
        reason = f"{reason} (SQLSTATE {sqlstate})"
    return unreachable(url, f"connection to {servers} failed: {reason}")


def _clean(text: str, url: str) -> str:
    """One line, libpq's double spaces squeezed, no password."""
    return dburl.redact(" ".join(text.split()), url)
