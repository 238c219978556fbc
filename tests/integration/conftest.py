"""Fixtures of the application-side client tests."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from examples.orders import orders
from flowworker.compiler import compile_flow


@pytest.fixture
def flows_url(db_url: str) -> str:
    """The test's database with the example flow and a root map flow defined."""
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(compile_flow(orders).encode())
        admin.execute("SELECT flowworker.create_flow('fanout')")
        admin.execute("SELECT flowworker.add_step('fanout', 'each', step_type => 'map')")
    return db_url


@pytest.fixture
def app_conn(flows_url: str) -> Iterator[psycopg.Connection]:
    """The application's connection: not autocommit, it owns its transactions."""
    with psycopg.connect(flows_url) as connection:
        yield connection


@pytest.fixture
def observer(flows_url: str) -> Iterator[psycopg.Connection]:
    """Another session, which sees only what was committed."""
    with psycopg.connect(flows_url, autocommit=True) as connection:
        yield connection
