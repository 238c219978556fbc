"""What the commands share: options, the database connection, --json output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flowworker.durations import parse_duration
from flowworker.errors import ConfigurationError
from flowworker.settings import DEFAULT_DATABASE_URL, Settings, load_settings

if TYPE_CHECKING:
    import psycopg

DatabaseOpt = Annotated[str | None, typer.Option(
    "--database-url", metavar="URL", help="Database URL [env: FLOWWORKER_DATABASE_URL, "
    f"DATABASE_URL] [default: {DEFAULT_DATABASE_URL}]")]
JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print one JSON document (keys in docs/operating.md)")]


# The settings of the command being run: main() says where a database URL
# that could not be used came from.
_settings: Settings | None = None


def settings_for(**flags: object) -> Settings:
    """Settings from the command's flags and the environment (see load_settings)."""
    global _settings  # noqa: PLW0603 - one command per process
    _settings = load_settings(**flags)
    return _settings


def current_settings() -> Settings | None:
    return _settings


@contextmanager
def database(database_url: str | None) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the configured database (exit 3 when it
    cannot be reached, 2 for a malformed URL)."""
    from flowworker.db_psycopg import connect

    settings = settings_for(database_url=database_url)
    with connect(settings.database_url, autocommit=True) as conn:
        yield conn


def print_json(document: Any) -> None:
    """One JSON document on stdout, keys in the order the dataclasses give."""
    from flowworker.ops import jsonable

    sys.stdout.write(json.dumps(jsonable(document), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def emit(document: Any, as_json: bool, human: Callable[[], None]) -> None:
    """--json: the document; otherwise what `human` prints for a person."""
    if as_json:
        print_json(document)
    else:
        human()


def duration_option(option: str, value: str) -> timedelta:
    """A duration flag such as `--older-than 7d`; exit 2 naming the flag."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigurationError(f"{option}: {exc}") from None


def moment_option(option: str, value: str, now: datetime) -> datetime:
    """A point in time: a duration ago (`2h`) or an ISO 8601 time
    (`2026-01-31T12:00:00+00:00`; without an offset, local time)."""
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(f"{option}: {value!r} is neither a duration (2h, 7d) "
                                 "nor an ISO 8601 time (2026-01-31T12:00)") from None
    return moment if moment.tzinfo else moment.astimezone()
