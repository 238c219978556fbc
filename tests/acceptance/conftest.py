"""Fixtures for the acceptance tests: `flowworker run` as a real subprocess.

Every acceptance test gets a fresh database (`db_url`) with the test app's
flows applied and the effect ledger created, and the invariant checker runs
after it (I1-I7, plus one applied completion per task in the workers' logs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.acceptance.harness import (
    APP,
    Database,
    IdleInTransactionSampler,
    Ledger,
    WorkerProcess,
    apply_flows,
    check_invariants,
    check_worker_logs,
)
from tests.support.database import PgServer

Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def dbname(db_url: str) -> str:
    return str(conninfo_to_dict(db_url)["dbname"])


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """The test's connection; flows of tests/apps/flows.py applied, ledger created."""
    apply_flows(db_url)
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
def spawn(db_url: str, spawned: list[WorkerProcess], worker_log_dir: Path) -> Spawn:
    """spawn(*flows, args=[...], app=..., wait_ready=True, name=...) -> a started worker."""

    def start(*flows: str, args: Sequence[str] = (), app: str = APP, wait_ready: bool = True,
              name: str | None = None, database_url: str | None = None,
              env: dict[str, str] | None = None, pass_database_url: bool = True,
              ready_timeout: float = 30.0) -> WorkerProcess:
        worker = WorkerProcess(
            database_url or db_url, flows, app=app, args=args, env=env,
            name=name or f"worker{len(spawned) + 1}", log_dir=worker_log_dir,
            pass_database_url=pass_database_url)
        spawned.append(worker)
        return worker.start(wait_ready=wait_ready, timeout=ready_timeout)

    return start


@pytest.fixture(autouse=True)
def invariants(db_url: str,
               spawned: list[WorkerProcess]) -> Iterator[None]:
    """Run the invariant checker after every acceptance test (while the
    test's workers are still up; they are torn down after this)."""
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
