"""Issue acceptance #9: exit codes and one clear line on stderr.

0 ok, 1 runtime failure, 2 usage/config, 3 database unreachable,
4 schema missing/outdated or flow shape mismatch.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from flowworker.devdb import free_port
from flowworker.schema import schema_version
from tests.acceptance.harness import Database, WorkerProcess
from tests.support.database import PgServer
from tests.support.worker_fixtures import Spawn

pytestmark = pytest.mark.acceptance

EXIT_TIMEOUT = 30.0


def exit_code_and_stderr(worker: WorkerProcess) -> tuple[int, str]:
    code = worker.wait_exit(timeout=EXIT_TIMEOUT)
    err = worker.stderr_text()
    assert "Traceback" not in err, f"a traceback instead of one clear line:\n{err}"
    assert err.strip(), "no error message on stderr"
    return code, err


@pytest.fixture
def bare_database(pg_server: PgServer) -> Iterator[str]:
    """A database without the flowworker schema."""
    name = f"bare_{uuid.uuid4().hex[:12]}"
    pg_server.execute(f"CREATE DATABASE {name}")
    try:
        yield pg_server.url(name)
    finally:
        pg_server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_schema_not_installed_exits_4(spawn: Spawn, bare_database: str) -> None:
    worker = spawn("diamond", database_url=bare_database, wait_ready=False)
    code, err = exit_code_and_stderr(worker)
    assert code == 4, err
    assert "schema" in err.lower(), err


def test_schema_that_needs_newer_workers_exits_4(db: Database, spawn: Spawn) -> None:
    db.execute("INSERT INTO flowworker.migrations (version, name, min_worker_version) "
               "VALUES (9999, 'from_the_future', 9999)")
    code, err = exit_code_and_stderr(spawn("diamond", wait_ready=False))
    assert code == 4, err
    assert "needs workers of version 9999 or later" in err, err
    assert "upgrade flowworker" in err, err


def test_a_newer_schema_that_old_workers_can_use_is_served(db: Database, spawn: Spawn) -> None:
    """A migration that changes nothing old workers call keeps min_worker_version:
    workers of the previous version go on serving (a rolling deploy)."""
    db.execute("INSERT INTO flowworker.migrations (version, name, min_worker_version) "
               f"VALUES (9999, 'compatible', {schema_version()})")
    spawn("diamond")
    run_id = db.start_run("diamond", {"n": 2})
    db.wait_runs([run_id], timeout=30)
    assert db.run_statuses([run_id]) == {"completed": 1}


def test_flow_shape_differs_from_the_code_exits_4_naming_the_step(
        db: Database, spawn: Spawn) -> None:
    # The database holds diamond from tests.apps.flows (last step `summarize`);
    # tests.apps.mismatch defines diamond with `tally` instead.
    code, err = exit_code_and_stderr(
        spawn("diamond", app="tests.apps.mismatch", wait_ready=False))
    assert code == 4, err
    assert "tally" in err or "summarize" in err, f"the error should name the step:\n{err}"


def test_unreachable_database_exits_3(spawn: Spawn) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    code, err = exit_code_and_stderr(spawn("diamond", database_url=nowhere, wait_ready=False))
    assert code == 3, err


def test_unknown_flow_slug_exits_2(db: Database, spawn: Spawn) -> None:
    code, err = exit_code_and_stderr(spawn("nosuchflow", wait_ready=False))
    assert code == 2, err
    assert "nosuchflow" in err, err


@pytest.mark.parametrize("args", [
    pytest.param(["--signal", "pigeon"], id="bad-signal"),
    pytest.param(["--concurrency", "0"], id="zero-concurrency"),
    pytest.param(["--metrics-addr", "not-an-address"], id="bad-metrics-addr"),
])
def test_bad_configuration_exits_2(args: list[str], db: Database, spawn: Spawn) -> None:
    code, err = exit_code_and_stderr(spawn("diamond", args=args, wait_ready=False))
    assert code == 2, err
