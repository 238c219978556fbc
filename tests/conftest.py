from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.support.database import PgServer, test_server


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    with test_server(tmp_path_factory.mktemp("postgres")) as server:
        server.create_template()
        yield server


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
