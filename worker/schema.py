"""The SQL shipped with flowworker: schema objects, migrations, named queries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_QUERY_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def _folder(name: str) -> Traversable:
    return resources.files("flowworker.sql").joinpath(name)


def _sql_files(name: str) -> list[Traversable]:
    return sorted((f for f in _folder(name).iterdir() if f.name.endswith(".sql")),
                  key=lambda f: f.name)


@cache
def schema_sql() -> str:
    """The whole core schema as it is now, one object per file, in file-name
    order: what a fresh install runs. It records every version it holds."""
    return "\n".join(f.read_text() for f in _sql_files("schema"))


@cache
def migrations() -> tuple[Migration, ...]:
    """Forward-only deltas from version 1 (the first release) to now; each
    records its own version. A database at version v gets those above v."""
    found = []
    for file in _sql_files("migrations"):
        match = _MIGRATION_NAME.match(file.name)
        if match:
            found.append(Migration(int(match[1]), match[2], file.read_text()))
    return tuple(found)


def schema_version() -> int:
    """The schema version this code installs and expects."""
    return migrations()[-1].version if migrations() else 1


def incompatibility(db_version: int, min_worker_version: int) -> str | None:
    """Why a worker of this code must not run against a database at
    db_version whose newest migration needs workers of min_worker_version
    or later; None when it may. Newer databases are fine until a migration
    says otherwise (docs/development.md, "Adding a migration")."""
    mine = schema_version()
    if db_version < mine:
        return (f"database schema is version {db_version}, this flowworker expects "
                f"{mine}; run `flowworker migrate`")
    if min_worker_version > mine:
        return (f"database schema is version {db_version}, which needs workers of version "
                f"{min_worker_version} or later (this one is {mine}); upgrade flowworker")
    return None


@cache
def queries() -> dict[str, str]:
    """Named queries from sql/queries/*.sql (`-- name: x` starts query x)."""
    named: dict[str, str] = {}
    for file in _sql_files("queries"):
        parts = _QUERY_NAME.split(file.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in named:
                raise ValueError(f"query {name!r} is defined twice (again in {file.name})")
            named[name] = body.strip()
    return named
