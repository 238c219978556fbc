"""Fixtures of the CLI tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.database import PgServer


@pytest.fixture
def empty_db_url(pg_server: PgServer) -> Iterator[str]:
    """A database with nothing in it: no flowworker schema."""
    name = f"e_{uuid.uuid4().hex[:16]}"
    pg_server.execute(f"CREATE DATABASE {name}")
    try:
        yield pg_server.url(name)
    finally:
        pg_server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
