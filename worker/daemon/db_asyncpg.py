"""The worker's asyncpg pool (claims, acknowledgements, bookkeeping), its
jsonb codec, and retrying through connection loss."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlencode

import anyio
import asyncpg

from flowworker import connect_errors, dburl, logs, metrics
from flowworker.schema import queries

T = TypeVar("T")

# Serialization failures, deadlocks, and the server going away (class 08 and
# admin/crash shutdown, cannot-connect-now) are worth retrying; the rest is not.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300"})


class ConnectionLostError(Exception):
    """No connection could be had: the server is down, restarting, or
    refusing connections (e.g. ALLOW_CONNECTIONS false)."""


def is_retryable(exc: BaseException) -> bool:
    """True when the operation may succeed if repeated on a new connection."""
    # InternalClientError: asyncpg's protocol state after the server ended the
    # session mid-operation; the connection is unusable, a new one is fine.
    if isinstance(exc, OSError | TimeoutError | ConnectionLostError | asyncpg.InterfaceError
                  | asyncpg.InternalClientError | asyncpg.PostgresConnectionError):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and (sqlstate in RETRYABLE_SQLSTATES
                                          or sqlstate.startswith("08"))


def backoff(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Capped exponential backoff with full jitter (never a busy spin)."""
    return random.uniform(base, min(cap, base * 2 ** min(attempt, 16)))  # noqa: S311


class UndecodableJson:
    """Stands in for a JSON value Python cannot or will not decode (nested
    too deep, an integer over Python's digit limit, too large), so that the
    task it belongs to fails its attempt instead of the claim crashing the
    worker (and every task claimed beside it)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


# A decoded value takes several times its text in memory; a task input
# beyond this is refused rather than decoded. Inputs are bounded in the
# database too (max_input_bytes, max_output_bytes, max_map_output_bytes).
MAX_DECODE_CHARS = 64 << 20


def decode_json(text: str) -> Any:
    if len(text) > MAX_DECODE_CHARS:
        return UndecodableJson(f"it is {len(text)} characters of JSON, over the worker's "
                               f"limit of {MAX_DECODE_CHARS}")
    try:
        return json.loads(text)
    except RecursionError:
        return UndecodableJson("nested too deeply for Python's JSON decoder")
    except ValueError as exc:  # e.g. an integer past Python's 4,300-digit limit
        return UndecodableJson(str(exc).split("\n", 1)[0][:200])


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Hand a connection back as it is. asyncpg's default reset is a round
    trip per release (UNLISTEN, RESET ALL, ...) and so doubled every claim and
    acknowledgement; these connections only call flowworker's functions, which
    leave no session state (asyncpg still rolls back an open transaction)."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Outputs arrive here already serialised (so a bad one fails its attempt,
    # not the batch); text goes through as is.
    await conn.set_type_codec("jsonb", encoder=str, decoder=decode_json, schema="pg_catalog")


def asyncpg_dsn(dsn: str) -> str:
    """A URL for asyncpg, rebuilt from what libpq reads in `dsn` (a URL or
    key=value string). asyncpg parses URLs its own way (the user info ends at
    the first '@', the host at a '?' or '#'), so it never sees what the user
    typed: both drivers connect to the same place, and no part of a password
    can turn up in asyncpg's messages as a host or port."""
    params = dburl.parse(dsn)
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    netloc = _netloc(params.pop("host", ""), params.pop("port", ""))
    database = quote(params.pop("dbname", ""), safe="")
    query = urlencode(params)
    return f"postgresql://{auth}{netloc}/{database}" + (f"?{query}" if query else "")


def _netloc(hosts: str, ports: str) -> str:
    """host:port pairs; asyncpg splits at ',' before unquoting each host."""
    names = hosts.split(",")
    numbers = ports.split(",") if ports else [""]
    if len(numbers) == 1:
        numbers *= len(names)
    return ",".join(quote(name, safe="") + (f":{port}" if port else "")
                    for name, port in zip(names, numbers, strict=True))


async def connect(url: str, **kwargs: Any) -> asyncpg.Connection:
    """One connection with flowworker's codecs."""
    conn = await asyncpg.connect(asyncpg_dsn(url), **kwargs)
    await _init_connection(conn)
    return conn


class Queries(Protocol):
    """What the daemon's parts use of the database: named queries
    (sql/queries/worker.sql) and retrying. Database is the real one; unit
    tests give a fake."""

    async def fetch(self, name: str, *args: Any) -> list[Any]: ...

    async def fetchval(self, name: str, *args: Any) -> Any: ...

    async def retrying(self, what: str, operation: Callable[[], Awaitable[T]],
                       give_up: Callable[[], bool] = ...) -> T: ...


class GaveUpError(Exception):
    """A retried operation was abandoned (second signal while the database is away)."""


class Database:
    """A small pool for claims, acknowledgements and bookkeeping."""

    def __init__(self, url: str, size: int, command_timeout: float = 30.0,
                 statement_cache_size: int = 100) -> None:
        self.url = url
        self.size = size
        self.command_timeout = command_timeout
        self.statement_cache_size = statement_cache_size
        self._pool: asyncpg.Pool | None = None
        self.sql = queries()

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                asyncpg_dsn(self.url), min_size=1, max_size=self.size, init=_init_connection,
                reset=_keep_session,
                command_timeout=self.command_timeout, timeout=min(10.0, self.command_timeout),
                statement_cache_size=self.statement_cache_size,
                server_settings={"application_name": "flowworker"})
        except ValueError as exc:  # asyncpg.ClientConfigurationError among them
            raise dburl.invalid(str(exc), self.url) from None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise connect_errors.from_asyncpg(self.url, exc) from None

    async def close(self, patience: float = 5.0) -> None:
        if self._pool is not None:
            with anyio.move_on_after(patience, shield=True):
                await self._pool.close()
            self._pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "Database.open() first"
        return self._pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; any failure to get one is ConnectionLostError."""
        try:
            conn = await self.pool.acquire(timeout=self.command_timeout)
        except Exception as exc:
            raise ConnectionLostError(f"{type(exc).__name__}: {exc}") from exc
        try:
            yield conn
        except BaseException as exc:
            if is_retryable(exc) or not isinstance(exc, Exception):
                # Broken, or cancelled mid-query: never hand it to the next user.
                conn.terminate()
            raise
        finally:
            await self.pool.release(conn)

    async def fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(self.sql[name], *args)
            return rows

    async def fetchval(self, name: str, *args: Any) -> Any:
        async with self.connection() as conn:
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
