"""Install or upgrade the core schema, then apply compiled flow files."""

from __future__ import annotations

from pathlib import Path

import psycopg

from flowworker.db import connect
from flowworker.errors import DatabaseError, SchemaError
from flowworker.schema import migrations, queries, schema_version


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


def migrate(database_url: str, flow_dir: Path | None = None) -> list[str]:
    """Apply pending migrations, then every `*.sql` file in flow_dir.

    Each step runs in its own transaction under one advisory lock, so
    concurrent and repeated calls are safe. Returns what was applied.
    """
    applied: list[str] = []
    files = sorted(flow_dir.glob("*.sql")) if flow_dir else []
    with connect(database_url) as conn:
        with conn.transaction():
            conn.execute(queries()["migrate_lock"])
            current = database_version(conn)
            if current > schema_version():
                raise SchemaError(
                    f"database schema is version {current}, newer than this flowworker "
                    f"({schema_version()}); upgrade flowworker")
            for migration in migrations():
                if migration.version > current:
                    _execute(conn, migration.sql, f"migration {migration.version}")
                    applied.append(f"migration {migration.version:04d}_{migration.name}")
        for file in files:
            with conn.transaction():
                conn.execute(queries()["migrate_lock"])
                _execute(conn, file.read_text(), str(file))
                applied.append(str(file))
    return applied


def _execute(conn: psycopg.Connection, sql: str, what: str) -> None:
    try:
        conn.execute(sql.encode())
    except psycopg.Error as exc:
        diag = exc.diag.message_primary or str(exc).splitlines()[0]
        raise DatabaseError(f"{what}: {diag}") from None


def check_schema(conn: psycopg.Connection) -> None:
    """Raise SchemaError unless the installed schema is this code's version."""
    current = database_version(conn)
    if current == 0:
        raise SchemaError("flowworker schema is not installed; run `flowworker migrate`")
    if current != schema_version():
        raise SchemaError(
            f"database schema is version {current}, this flowworker expects "
            f"{schema_version()}; run `flowworker migrate`")
