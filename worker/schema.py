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
    """The whole core schema, one object per file, in file-name order."""
    return "\n".join(f.read_text() for f in _sql_files("schema"))


@cache
def migrations() -> tuple[Migration, ...]:
    """Forward-only migrations; each records its own version."""
    found = []
    for file in _sql_files("migrations"):
        match = _MIGRATION_NAME.match(file.name)
        if match:
            found.append(Migration(int(match[1]), match[2], file.read_text()))
    return tuple(found)


def schema_version() -> int:
    """The schema version this code installs and expects."""
    return migrations()[-1].version


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
