"""asyncpg connections for the worker's hot path, and retrying through loss."""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import asyncpg

from flowworker import logs, metrics
from flowworker.errors import DatabaseUnreachableError
from flowworker.schema import queries

T = TypeVar("T")

# Serialization failures, deadlocks, and the server going away (class 08 and
# admin/crash shutdown, cannot-connect-now) are worth retrying; the rest is not.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300"})


def is_retryable(exc: BaseException) -> bool:
    """True when the operation may succeed if repeated on a new connection."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError
                  | asyncpg.PostgresConnectionError):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and (sqlstate in RETRYABLE_SQLSTATES
                                          or sqlstate.startswith("08"))


def backoff(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Capped exponential backoff with full jitter (never a busy spin)."""
    return random.uniform(base, min(cap, base * 2 ** min(attempt, 16)))  # noqa: S311


class UndecodableJson:
    """Stands in for a JSON value Python cannot decode (e.g. nested too deep),
    so that the task fails clearly instead of the claim crashing the worker."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def decode_json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        return UndecodableJson("nested too deeply for Python's JSON decoder")


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Outputs arrive here already serialised (so a bad one fails its attempt,
    # not the batch); text goes through as is.
    await conn.set_type_codec("jsonb", encoder=str, decoder=decode_json, schema="pg_catalog")


async def connect(url: str, **kwargs: Any) -> asyncpg.Connection:
    """One connection with flowworker's codecs."""
    conn = await asyncpg.connect(url, **kwargs)
    await _init_connection(conn)
    return conn


class GaveUpError(Exception):
    """A retried operation was abandoned (second signal while the database is away)."""


class Database:
    """A small pool for claims, acknowledgements and bookkeeping."""

    def __init__(self, url: str, size: int, command_timeout: float = 30.0) -> None:
        self.url = url
        self.size = size
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self.sql = queries()

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.size, init=_init_connection,
                command_timeout=self.command_timeout, timeout=10,
                server_settings={"application_name": "flowworker"})
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnreachableError(f"database unreachable: {exc}") from None

    async def close(self) -> None:
        if self._pool is not None:
            with anyio.move_on_after(5, shield=True):
                await self._pool.close()
            self._pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "Database.open() first"
        return self._pool

    async def fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(self.sql[name], *args)
            return rows

    async def fetchval(self, name: str, *args: Any) -> Any:
        async with self.pool.acquire() as conn:
            return await conn.fetchval(self.sql[name], *args)

    async def retrying(self, what: str, operation: Callable[[], Awaitable[T]],
                       give_up: Callable[[], bool] = lambda: False) -> T:
        """Run operation until it succeeds, waiting out lost connections and
        restarts with capped, jittered backoff. Only for idempotent work.
        Raises GaveUpError when give_up() turns true while the database is away."""
        attempt = 0
        while True:
            try:
                return await operation()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                if give_up():
                    raise GaveUpError(f"{what}: gave up after {type(exc).__name__}") from exc
                metrics.DB_RECONNECTS.inc()
                delay = backoff(attempt)
                logs.event("db.reconnecting", what=what, error=type(exc).__name__,
                           retry_in_ms=round(delay * 1000))
                attempt += 1
                await anyio.sleep(delay)
