"""Fixtures of the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cli.helpers import empty_database
from tests.support.database import PgServer


@pytest.fixture
def empty_db_url(pg_server: PgServer) -> Iterator[str]:
    """A database with nothing in it: no flowworker schema."""
    with empty_database(pg_server) as url:
        yield url
