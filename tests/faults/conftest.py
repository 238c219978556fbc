"""Fixtures of the fault tests: the acceptance harness (real `flowworker run`
subprocesses, the effect ledger, the invariant checker), with the flows of
both tests/apps/flows.py and tests/apps/faults.py applied.

The invariant checker is not autouse here (tests/faults/sql has tests of
its own kind): the worker fault modules opt in with
`pytestmark = pytest.mark.usefixtures("invariants")`.
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
from tests.faults.support import FAULTS_APP
from tests.support.database import PgServer

Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def dbname(db_url: str) -> str:
    return str(conninfo_to_dict(db_url)["dbname"])


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """The test's connection; both test apps' flows applied, ledger created."""
    apply_flows(db_url, APP)
    apply_flows(db_url, FAULTS_APP)
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
    """spawn(*flows, args=[...], app=FAULTS_APP, wait_ready=True, name=..., env=...)."""

    def start(*flows: str, args: Sequence[str] = (), app: str = FAULTS_APP,
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
    """I1-I7 and one applied completion per task in the workers' logs, checked
    after the test while its workers are still up."""
    with IdleInTransactionSampler(db_url) as sampler:
        yield
    for worker in spawned:
        if worker.alive():
            worker.thaw()
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
