"""Install or upgrade the core schema, then apply compiled flow files."""

from __future__ import annotations

from pathlib import Path

import psycopg

from flowworker.db_psycopg import connect
from flowworker.errors import (
    DatabaseError,
    DatabaseUnreachableError,
    MigrateLockTimeoutError,
    SchemaError,
    ShapeMismatchError,
)
from flowworker.schema import migrations, queries, schema_sql, schema_version


def database_version(conn: psycopg.Connection) -> int:
    """The schema version installed, 0 when there is none."""
    q = queries()
    state = conn.execute(q["schema_state"]).fetchone()
    assert state is not None
    has_schema, has_migrations = state
    if not has_schema:
        return 0
    if not has_migrations:
        raise SchemaError("schema flowworker exists but was not installed by flowworker")
    row = conn.execute(q["schema_version"]).fetchone()
    return int(row[0]) if row else 0


def migrate(database_url: str, flow_dir: Path | None = None,
            lock_timeout: float = 60.0) -> list[str]:
    """Install the schema, or apply the migrations a database lacks; then
    every `*.sql` file in flow_dir.

    An empty database gets the current schema in one transaction (sql/schema,
    which records every version); one at version v gets the migrations above
    v, each in a transaction of its own. One session-level advisory lock
    covers the whole call, so concurrent and repeated calls are safe; it is
    taken before anything is applied, waiting at most lock_timeout seconds.
    A compiled flow file brings its own BEGIN/COMMIT. Returns what was applied.
    """
    applied: list[str] = []
    files = sorted(flow_dir.glob("*.sql")) if flow_dir else []
    with connect(database_url, autocommit=True) as conn:
        _take_lock(conn, lock_timeout)
        try:
            current = database_version(conn)
            if current > schema_version():
                raise SchemaError(
                    f"database schema is version {current}, newer than this flowworker "
                    f"({schema_version()}); upgrade flowworker")
            if current == 0:
                with conn.transaction():
                    _execute(conn, schema_sql(), "schema")
                applied.append(f"schema version {schema_version()}")
            for migration in migrations():
                if current and migration.version > current:
                    with conn.transaction():
                        _execute(conn, migration.sql, f"migration {migration.version}")
                    applied.append(f"migration {migration.version:04d}_{migration.name}")
            for file in files:
                _execute(conn, file.read_text(), str(file))
                applied.append(str(file))
        finally:
            if not conn.closed:
                conn.execute(queries()["migrate_unlock"])
    return applied


def _take_lock(conn: psycopg.Connection, timeout: float) -> None:
    """Wait for the migrate lock, or raise MigrateLockTimeoutError naming
    its holder. Any role that may connect can take this lock, so the wait is
    bounded. The server ends the wait (lock_timeout) rather than a client
    polling pg_try_advisory_lock: waiters keep their place in the queue and
    show in pg_locks, and the lock is taken the moment it is free."""
    q = queries()
    try:
        with conn.transaction():
            conn.execute(q["migrate_lock_timeout"], (str(max(1, round(timeout * 1000))),))
            conn.execute(q["migrate_lock"])
    except psycopg.errors.LockNotAvailable:
        raise MigrateLockTimeoutError(
            f"migrate lock not free after {timeout:g} s{_holder(conn)}") from None
    except psycopg.Error as exc:
        what = exc.diag.message_primary or str(exc).strip().splitlines()[0]
        if conn.closed:
            raise DatabaseUnreachableError(f"migrate lock: connection lost: {what}") from None
        raise DatabaseError(f"migrate lock: {what}") from None


def _holder(conn: psycopg.Connection) -> str:
    """Who holds the migrate lock, as much of it as this role may see."""
    row = conn.execute(queries()["migrate_lock_holder"]).fetchone()
    if row is None:
        return "; its holder has let go since: run migrate again"
    pid, user, app, client, state, since, seconds, visible = row
    if pid is None:
        return ": a prepared transaction holds it (see pg_prepared_xacts)"
    who = f": pid {pid} holds it (user {user}, application_name {app!r}"
    if not visible:
        return f"{who}; its client and state are hidden from this role)"
    return f"{who}, client {client or 'local socket'}, {state} for {seconds} s since {since})"


def _execute(conn: psycopg.Connection, sql: str, what: str) -> None:
    try:
        conn.execute(sql.encode())
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachableError(f"{what}: connection lost: {exc}") from None
    except psycopg.Error as exc:
        # A file's own BEGIN leaves the session in the failed transaction.
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.execute("ROLLBACK")
        diag = exc.diag.message_primary or str(exc).strip().splitlines()[0]
        # add_step says "flow 'x' changed shape: step 'y' ..." (SQLSTATE 22023).
        if isinstance(exc, psycopg.errors.InvalidParameterValue) and "changed shape" in diag:
            raise ShapeMismatchError(f"{what}: {diag}") from None
        raise DatabaseError(f"{what}: {diag}") from None
