"""Fixtures of the SQL fault tests: login roles of each kind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from tests.support.database import PgServer

KINDS = ("enqueuer", "worker", "reader", "operator", "nobody")


@dataclass(frozen=True)
class Logins:
    """Login roles made for one test (roles are cluster-wide: unique names)."""

    names: dict[str, str]
    db_url: str

    def connect(self, kind: str) -> psycopg.Connection:
        return psycopg.connect(self.db_url, user=self.names[kind], autocommit=True)


@contextmanager
def login_roles(pg_server: PgServer, db_url: str,
                groups: dict[str, str | None]) -> Iterator[Logins]:
    """A login per key, member of the flowworker group role its value names
    (None: no group), dropped with everything it owns afterwards."""
    tag = uuid.uuid4().hex[:10]
    names = {key: f"fw_{key}_{tag}" for key in groups}
    made: list[str] = []
    try:
        for key, name in names.items():
            pg_server.execute(f"CREATE ROLE {name} LOGIN")
            made.append(name)
            if groups[key] is not None:
                pg_server.execute(f"GRANT flowworker_{groups[key]} TO {name}")
        yield Logins(names, db_url)
    finally:
        with psycopg.connect(db_url, autocommit=True) as admin:
            # Sessions end after their clients close, taking their temporary
            # objects along; wait for that (the timeout makes this wait).
            admin.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                          "WHERE usename = ANY(%s)", (made,))
            if made:
                admin.execute(sql.SQL("DROP OWNED BY {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, made))))
        for name in made:
            pg_server.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.fixture
def logins(pg_server: PgServer, db_url: str) -> Iterator[Logins]:
    """One login of each kind: enqueuer, worker, reader, and nobody (no group)."""
    groups: dict[str, str | None] = {kind: None if kind == "nobody" else kind for kind in KINDS}
    with login_roles(pg_server, db_url, groups) as made:
        yield made
