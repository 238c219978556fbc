"""Fixtures of the worker harness, shared by tests/acceptance and
tests/faults: `flowworker run` as a real subprocess in a fresh database
with the test apps' flows applied and the effect ledger created, and the
invariant checker (I1-I7, plus one applied completion per task in the
workers' logs).

The top conftest loads this module as a plugin (pytest_plugins); a tier's
conftest says which apps it wants by overriding `flow_apps` (whose flows
are applied) and `default_app` (what spawn runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.acceptance.harness import (
    APP,
    Database,
    Ledger,
    WorkerProcess,
    apply_flows,
    check_worker_logs,
)
from tests.support.database import PgServer
from tests.support.invariants import IdleInTransactionSampler, check_invariants

Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def flow_apps() -> list[str]:
    return [APP]


@pytest.fixture
def default_app() -> str:
    return APP


@pytest.fixture
def dbname(db_url: str) -> str:
    return str(conninfo_to_dict(db_url)["dbname"])


@pytest.fixture
def db(db_url: str, flow_apps: list[str]) -> Iterator[Database]:
    """The test's connection; the flows of `flow_apps` applied, ledger created."""
    for app in flow_apps:
        apply_flows(db_url, app)
    database = Database(db_url)
    Ledger(database).create()
    yield database
    database.close()


@pytest.fixture
def ledger(db: Database) -> Ledger:
    return Ledger(db)


@pytest.fixture
def worker_log_dir(tmp_path: Path) -> Path:
    return tmp_path / "workers"


@pytest.fixture
def spawned() -> Iterator[list[WorkerProcess]]:
    """Every worker a test started; killed (after SIGCONT) at the end."""
    workers: list[WorkerProcess] = []
    yield workers
    for worker in workers:
        worker.close()


@pytest.fixture
def spawn(db_url: str, spawned: list[WorkerProcess], worker_log_dir: Path,
          default_app: str) -> Spawn:
    """spawn(*flows, args=[...], app=default_app, wait_ready=True, name=..., env=...)
    -> a started worker."""

    def start(*flows: str, args: Sequence[str] = (), app: str = default_app,
              wait_ready: bool = True, name: str | None = None,
              database_url: str | None = None, env: dict[str, str] | None = None,
              pass_database_url: bool = True, ready_timeout: float = 30.0) -> WorkerProcess:
        worker = WorkerProcess(
            database_url or db_url, flows, app=app, args=args, env=env,
            name=name or f"worker{len(spawned) + 1}", log_dir=worker_log_dir,
            pass_database_url=pass_database_url)
        spawned.append(worker)
        return worker.start(wait_ready=wait_ready, timeout=ready_timeout)

    return start


@pytest.fixture
def invariants(db_url: str, spawned: list[WorkerProcess]) -> Iterator[None]:
    """Run the invariant checker after the test, while its workers are
    still up (they are torn down after this)."""
    with IdleInTransactionSampler(db_url) as sampler:
        yield
    for worker in spawned:
        if worker.alive():
            worker.thaw()  # a frozen worker must not hold anything when we look
    problems = sampler.problems() + check_worker_logs(spawned)
    database = Database(db_url)
    try:
        problems += check_invariants(database.conn)
    finally:
        database.close()
    if problems:
        pytest.fail("invariants violated after the test:\n  " + "\n  ".join(problems),
                    pytrace=False)


@pytest.fixture
def cluster_server(pg_server: PgServer) -> PgServer:
    """The session's server, when the tests own it and may stop/start it."""
    if pg_server.cluster is None:
        pytest.skip("the database server is not ours to restart (FLOWWORKER_TEST_DATABASE_URL "
                    "or a container)")
    return pg_server
