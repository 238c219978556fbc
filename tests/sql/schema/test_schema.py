"""Installing the schema fresh and upgrading from the first release give the
same catalog: sql/schema/ is the current state, sql/migrations/ the deltas
from version 1, and a delta that forgets an object fails here."""

from __future__ import annotations

import gzip
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from flowworker.schema import migrations, schema_sql
from tests.support.database import PgServer

# Each query describes one kind of object in schema flowworker, ordered.
DESCRIBE = {
    "relations": """
        SELECT c.relname, c.relkind, c.relpersistence, c.relacl::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'flowworker' ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'flowworker' AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text, contypid::regtype::text, conname,
               pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'flowworker'::regnamespace ORDER BY 1, 2, 3""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'flowworker' ORDER BY 1, 2""",
    "sequences": """
        SELECT sequencename, data_type::text, start_value, increment_by FROM pg_sequences
        WHERE schemaname = 'flowworker' ORDER BY 1""",
    "functions": """
        SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proconfig,
               p.prosecdef, p.provolatile, p.proacl::text
        FROM pg_proc p WHERE p.pronamespace = 'flowworker'::regnamespace ORDER BY 1""",
    "types": """
        SELECT t.typname, t.typtype, t.typacl::text FROM pg_type t
        WHERE t.typnamespace = 'flowworker'::regnamespace ORDER BY 1""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger
        WHERE tgrelid::regclass::text LIKE 'flowworker.%' AND NOT tgisinternal ORDER BY 1, 2""",
    "schema": """
        SELECT nspname, nspacl::text FROM pg_namespace WHERE nspname = 'flowworker'""",
    "migrations": """
        SELECT version, name, min_worker_version FROM flowworker.migrations ORDER BY 1""",
}

# The schema as version 1 shipped it (the first release's 0001 migration),
# kept as a frozen fixture: databases in the field started there. Stored
# compressed because it is a record, never edited; the digest pins it.
BASELINE = Path(__file__).parent / "baseline" / "0001_initial.sql.gz"
BASELINE_SHA256 = "b6301c07182fe83242c4b0b784ee1e31ee504350d00097e185a9efa37afbe898"


def baseline_sql() -> bytes:
    return gzip.decompress(BASELINE.read_bytes())


@pytest.fixture
def empty_dbs(pg_server: PgServer) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    """Two new databases with nothing installed (not clones of the template)."""
    names = [f"s_{uuid.uuid4().hex[:16]}" for _ in range(2)]
    try:
        for name in names:
            pg_server.execute(f"CREATE DATABASE {name}")
        with psycopg.connect(pg_server.url(names[0]), autocommit=True) as one, \
                psycopg.connect(pg_server.url(names[1]), autocommit=True) as two:
            yield one, two
    finally:
        for name in names:
            pg_server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def describe(conn: psycopg.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {kind: conn.execute(query).fetchall() for kind, query in DESCRIBE.items()}


def test_the_version_1_baseline_is_frozen() -> None:
    assert hashlib.sha256(baseline_sql()).hexdigest() == BASELINE_SHA256


def test_fresh_install_equals_upgrading_from_version_1(
        empty_dbs: tuple[psycopg.Connection, psycopg.Connection]) -> None:
    fresh, migrated = empty_dbs
    fresh.execute(schema_sql().encode())
    with migrated.transaction():
        migrated.execute(baseline_sql())
    assert migrations(), "no migrations found"
    assert migrations()[0].version == 2, "deltas start after the version 1 baseline"
    for migration in migrations():
        with migrated.transaction():
            migrated.execute(migration.sql.encode())

    want, got = describe(fresh), describe(migrated)
    assert want["functions"], "the schema defines no functions"
    assert want["migrations"][-1][0] == migrations()[-1].version
    for kind in DESCRIBE:
        assert got[kind] == want[kind], f"{kind} differ between install and migrations"


def test_every_function_pins_search_path(conn: psycopg.Connection) -> None:
    rows = conn.execute("""
        SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p
        WHERE p.pronamespace = 'flowworker'::regnamespace ORDER BY 1""").fetchall()
    names = {name.split("(")[0].removeprefix("flowworker.") for name, _ in rows}
    assert {"start_flow", "start_tasks", "complete_task", "fail_task", "release_tasks",
            "cancel_run", "create_flow", "add_step", "check_slug"} <= names
    unpinned = [name for name, config in rows if 'search_path=""' not in (config or [])]
    assert unpinned == []
