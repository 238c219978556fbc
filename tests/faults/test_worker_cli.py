"""RELIABILITY B3, CLI side: `flowworker run` used badly. tests/cli covers
compile/migrate and `run` without --app; tests/acceptance/test_exit_codes.py
checks the worker's exit codes. What neither checks is added here: `run`
against a database without the schema, with an outdated schema, without
the flow, with another shape of the flow, or unreachable, says so in *one*
`flowworker: error:` line with the documented exit code, and leaves nothing
half-applied behind (no schema objects, no worker registered)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from flowworker.devdb import free_port
from tests.acceptance.harness import as_url
from tests.cli.helpers import assert_one_error_line, run_cli
from tests.support.database import PgServer

pytestmark = pytest.mark.acceptance


@pytest.fixture
def bare_url(pg_server: PgServer) -> Iterator[str]:
    """A database without the flowworker schema."""
    name = f"bare_{uuid.uuid4().hex[:12]}"
    pg_server.execute(f"CREATE DATABASE {name}")
    try:
        yield as_url(pg_server.url(name))
    finally:
        pg_server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_worker_cli(url: str, *flows: str, app: str = "tests.apps.flows") -> str:
    args = ["run", "--app", app, "--database-url", url, "--metrics-addr", "off"]
    for flow in flows:
        args += ["--flow", flow]
    return " ".join(args)


def run_args(url: str, *flows: str, app: str = "tests.apps.flows") -> list[str]:
    return run_worker_cli(url, *flows, app=app).split(" ")


def workers_registered(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM flowworker.workers").fetchone()
    assert row is not None
    return int(row[0])


def test_b3_run_without_the_schema_exits_4_in_one_line_and_creates_nothing(
        bare_url: str) -> None:
    """B3: `run` on a database where `migrate` never ran."""
    line = assert_one_error_line(run_cli(*run_args(bare_url, "ping")), 4)
    assert "schema is not installed" in line, line
    assert "flowworker migrate" in line, line
    with psycopg.connect(bare_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'flowworker'").fetchone()
    assert row == (0,), "run must not install (part of) the schema by itself"


def test_b3_run_with_an_outdated_schema_exits_4_in_one_line(db_url: str) -> None:
    """B3: the database's schema is older than this flowworker."""
    url = as_url(db_url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM flowworker.migrations")
        conn.execute("INSERT INTO flowworker.migrations (version, name) VALUES (0, 'ancient')")
    line = assert_one_error_line(run_cli(*run_args(url, "ping")), 4)
    assert "schema is version 0" in line, line
    assert "flowworker migrate" in line, line
    assert workers_registered(url) == 0


def test_b3_run_for_a_flow_that_was_never_applied_exits_4_naming_it(db_url: str) -> None:
    """B3: the template database has the schema but no flows at all."""
    url = as_url(db_url)
    line = assert_one_error_line(run_cli(*run_args(url, "ping")), 4)
    assert "'ping'" in line, line
    assert "not in the database" in line, line
    assert workers_registered(url) == 0


def test_b3_run_with_another_shape_exits_4_in_one_line_naming_the_step(db_url: str) -> None:
    """B3: tests/apps/mismatch.py defines `diamond` with `tally` where the
    database (tests/apps/flows.py) has `summarize`."""
    url = as_url(db_url)
    compiled = run_cli("compile", "--app", "tests.apps.flows", "--flow", "diamond")
    assert compiled.returncode == 0, compiled.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(compiled.stdout.encode())
    line = assert_one_error_line(run_cli(*run_args(url, "diamond", app="tests.apps.mismatch")), 4)
    assert "tally" in line or "summarize" in line, line
    assert workers_registered(url) == 0


def test_b3_run_against_an_unreachable_database_exits_3_in_one_line() -> None:
    """B3: nothing listens on the port."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    line = assert_one_error_line(run_cli(*run_args(url, "ping")), 3)
    assert "database unreachable" in line, line


def test_b3_run_for_a_flow_the_app_does_not_define_exits_2_in_one_line(db_url: str) -> None:
    """B3: --flow names no flow of the app."""
    line = assert_one_error_line(run_cli(*run_args(as_url(db_url), "nosuchflow")), 2)
    assert "nosuchflow" in line, line
