from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.database import PgServer, test_server

# pytest takes plugins only from the top conftest; the worker harness's
# fixtures (used by tests/acceptance and tests/faults) are offered to all.
pytest_plugins = ["tests.support.session_tmp", "tests.support.worker_fixtures"]

TESTS = Path(__file__).parent
# Tiers that run worker subprocesses and inject faults: `make test` runs
# them, `make test-fast` leaves them out by these markers, so a new module
# there needs no list of files updated.
TIER_MARKERS = {"acceptance": pytest.mark.acceptance, "faults": pytest.mark.faults}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.relative_to(TESTS).parts[0]
        if tier in TIER_MARKERS:
            item.add_marker(TIER_MARKERS[tier])


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    with test_server(tmp_path_factory.mktemp("postgres")) as server:
        server.create_template()
        yield server
        server.drop_template()


@pytest.fixture
def db_url(pg_server: PgServer) -> Iterator[str]:
    """A database of its own for each test, cloned from the migrated template."""
    with pg_server.fresh_database() as url:
        yield url


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's database."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection
