"""RELIABILITY D13: a login that may only connect holds the migrate lock.
`flowworker migrate --lock-timeout 2` gives up after about 2 s with one
line naming the holder, exits 1 and applies nothing; once the holder lets
go, migrate succeeds."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.cli.helpers import assert_one_error_line, clean_env, command, empty_database
from tests.support.database import PgServer

MIGRATE_LOCK = "SELECT pg_advisory_lock(hashtext('flowworker.migrate'))"
MIGRATE_UNLOCK = "SELECT pg_advisory_unlock(hashtext('flowworker.migrate'))"
LOCK_TIMEOUT = 2
MARGIN = 8  # seconds for the process to start and connect on a loaded machine
INTRUDER_APP = "flowworker_test_intruder"


@pytest.fixture
def empty_db_url(pg_server: PgServer) -> Iterator[str]:
    with empty_database(pg_server) as url:
        yield url


@pytest.fixture
def login_role(pg_server: PgServer) -> Iterator[str]:
    """A role that may log in and nothing else (PUBLIC may connect)."""
    role = f"intruder_{uuid.uuid4().hex[:10]}"
    pg_server.execute(f"CREATE ROLE {role} LOGIN")
    try:
        yield role
    finally:
        pg_server.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def intruder(empty_db_url: str, login_role: str) -> Iterator[psycopg.Connection]:
    """A session of that role holding the migrate lock."""
    url = make_conninfo(empty_db_url, user=login_role, application_name=INTRUDER_APP)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(MIGRATE_LOCK)
        yield conn


@pytest.fixture
def owner_url(pg_server: PgServer, empty_db_url: str) -> Iterator[str]:
    """A non-superuser schema owner, as README's production setup makes one."""
    role = f"owner_{uuid.uuid4().hex[:10]}"
    dbname = str(psycopg.conninfo.conninfo_to_dict(empty_db_url)["dbname"])
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(dbname), sql.Identifier(role)))
    try:
        yield make_conninfo(empty_db_url, user=role)
    finally:  # the role owns the schema now: its database goes first
        pg_server.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        pg_server.execute(f"DROP ROLE IF EXISTS {role}")


def migrate(url: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """`flowworker migrate` and its wall time; a hang fails past the margin."""
    started = time.monotonic()
    result = subprocess.run(command("migrate", "--database-url", url, *extra), env=clean_env(),
                            capture_output=True, text=True, timeout=LOCK_TIMEOUT + 4 * MARGIN,
                            check=False)
    return result, time.monotonic() - started


def has_schema(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regnamespace('flowworker') IS NOT NULL").fetchone()
        return bool(row and row[0])


def test_d13_a_held_lock_ends_migrate_naming_the_holder(
        empty_db_url: str, login_role: str, intruder: psycopg.Connection) -> None:
    result, elapsed = migrate(empty_db_url, "--lock-timeout", str(LOCK_TIMEOUT))
    line = assert_one_error_line(result, 1)
    assert LOCK_TIMEOUT <= elapsed < LOCK_TIMEOUT + MARGIN, elapsed
    pid = intruder.info.backend_pid
    assert f"migrate lock not free after {LOCK_TIMEOUT} s: pid {pid} holds it" in line
    # The test migrates as a superuser, who sees everything about the holder.
    assert f"user {login_role}, application_name '{INTRUDER_APP}'" in line
    assert "client 127.0.0.1, idle for " in line
    assert not has_schema(empty_db_url), "migrate applied something without the lock"

    intruder.execute(MIGRATE_UNLOCK)
    result, _ = migrate(empty_db_url, "--lock-timeout", str(LOCK_TIMEOUT))
    assert result.returncode == 0, result.stderr
    assert "applied schema version" in result.stderr
    assert has_schema(empty_db_url)


def test_d13_a_role_that_cannot_see_the_holder_still_names_it(
        owner_url: str, login_role: str, intruder: psycopg.Connection) -> None:
    result, _ = migrate(owner_url, "--lock-timeout", "0.5")
    line = assert_one_error_line(result, 1)
    pid = intruder.info.backend_pid
    assert (f"pid {pid} holds it (user {login_role}, application_name '{INTRUDER_APP}'; "
            "its client and state are hidden from this role)") in line
    assert not has_schema(owner_url)

    intruder.execute(MIGRATE_UNLOCK)
    result, _ = migrate(owner_url)
    assert result.returncode == 0, result.stderr
    assert has_schema(owner_url)


def test_d13_the_lock_timeout_comes_from_the_environment(
        empty_db_url: str, intruder: psycopg.Connection) -> None:
    started = time.monotonic()
    result = subprocess.run(command("migrate", "--database-url", empty_db_url),
                            env=clean_env({"FLOWWORKER_MIGRATE_LOCK_TIMEOUT": "1"}),
                            capture_output=True, text=True, timeout=4 * MARGIN, check=False)
    assert "migrate lock not free after 1 s" in assert_one_error_line(result, 1)
    assert time.monotonic() - started < 1 + MARGIN
