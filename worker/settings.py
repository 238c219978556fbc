"""Settings: flags, then FLOWWORKER_* environment variables, then defaults.

Every field's description is the user's documentation: the README's table of
settings is generated from them (`python -m flowworker.settings_table`).
"""

from __future__ import annotations

import difflib
import json
import os
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flowworker import dburl
from flowworker.durations import parse_duration
from flowworker.errors import ConfigurationError

ENV_PREFIX = "FLOWWORKER_"
# Read by flowworker's own test suite, never by a command: not warned about.
TEST_PREFIX = "FLOWWORKER_TEST_"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# The flag of each setting that has one, where it is not --field-name.
# tests/unit/test_settings_table.py checks these against the commands.
FLAGS: dict[str, str | None] = {
    "flows": "--flow", "migrate_lock_timeout": "--lock-timeout",
    "claim_grace": None, "heartbeat_interval": None, "sync_threads": None,
    "log_level": None, "statement_cache_size": None, "listen_unavailable": None,
    "command_timeout": None,
}


class Settings(BaseSettings):
    """Everything a flowworker command can be configured with."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("FLOWWORKER_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="libpq URL or key=value string of the database; `DATABASE_URL` is read "
        "when this is not set. Percent-encode `@` and `/` in the password.")
    app: str | None = Field(
        None, description="Module that defines the flows, as a dotted name (`myapp.flows`), "
        "importable from the working directory or `PYTHONPATH`.")
    flows: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("FLOWWORKER_FLOWS", "FLOWWORKER_FLOW", "flows"),
        description="Flow slugs the worker serves: `orders` or `orders,signup` (a JSON list "
        "works too); none means every flow of the app.")
    concurrency: int = Field(
        10, ge=1, le=10_000, description="Tasks run at once; claims never exceed free slots.")
    batch_size: int = Field(
        10, ge=1, le=1_000, description="Most tasks claimed per round trip. For short tasks "
        "(milliseconds), give `concurrency` at least twice this, so the next batch is claimed "
        "while one runs.")
    signal: Literal["notify", "poll"] = Field(
        "notify", description="`notify`: LISTEN/NOTIFY plus a jittered fallback poll; "
        "`poll`: polling only, with decorrelated-jitter backoff.")
    poll_min_interval: float = Field(
        0.05, gt=0, description="Seconds: shortest wait between polls that find nothing.")
    poll_max_interval: float = Field(
        1.0, gt=0, description="Seconds: longest wait between polls; also the NOTIFY fallback.")
    shutdown_timeout: float = Field(
        30.0, ge=0, description="Seconds running handlers get to finish after SIGTERM/SIGINT.")
    claim_grace: int = Field(
        5, ge=1, description="Seconds a claimed task stays hidden beyond its timeout before "
        "another worker may take it over.")
    heartbeat_interval: float = Field(
        5.0, gt=0, description="Seconds between worker heartbeats (`flowworker.workers`); "
        "also how often the queue metrics are read.")
    sync_threads: int = Field(
        0, ge=0, description="Threads for plain `def` handlers; 0 means `concurrency`.")
    metrics_addr: str = Field(
        "127.0.0.1:9108", description="host:port for `/metrics`, `/healthz`, `/readyz`; "
        "`off` disables. Each worker on a host needs its own port (or `off`).")
    drain: bool = Field(
        False, description="Exit 0 once the flows have no runnable work left (batch jobs, CI).")
    log_format: Literal["auto", "human", "json"] = Field(
        "auto", description="`auto`: `human` on a terminal, JSON lines otherwise.")
    log_level: str = Field(
        "INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL; DEBUG adds an event "
        "per task started and completed.")
    statement_cache_size: int = Field(
        100, ge=0, description="Prepared statements kept per connection; 0 behind PgBouncer "
        "in transaction pooling mode (which cannot keep them).")
    listen_unavailable: Literal["poll", "refuse"] = Field(
        "poll", description="When NOTIFY cannot reach the worker (PgBouncer in transaction "
        "pooling mode): `poll` falls back to polling; `refuse` exits 2.")
    command_timeout: float = Field(
        30.0, gt=0, description="Seconds before a database call counts as lost (a half-open "
        "connection); it is then retried on a new connection.")
    migrate_lock_timeout: float = Field(
        60.0, gt=0, le=86_400, description="Seconds `flowworker migrate` waits for the "
        "migrate lock before it exits 1 naming the session that holds it.")
    prune_after: timedelta | None = Field(
        None, description="Delete runs that ended, and workers that stopped, longer ago than "
        "this (e.g. 14d; s, m, h, d, w), in the background, one worker at a time; every few "
        "minutes. None or `off` (the default): never.")

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("database_url")
    @classmethod
    def _parsable_url(cls, value: str) -> str:
        try:
            dburl.parse(value)
        except ConfigurationError as exc:  # its message never shows the URL
            raise PydanticCustomError("database_url", str(exc)) from None
        return value

    @field_validator("flows", mode="before")
    @classmethod
    def _slug_list(cls, value: object) -> object:
        """`a,b` as people type it; a JSON list as before."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text.startswith("["):
            return [slug.strip() for slug in text.split(",") if slug.strip()]
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError("must be slugs separated by commas, or a JSON list") from None

    @field_validator("prune_after", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            return None if value.strip().lower() in {"", "off"} else parse_duration(value)
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("metrics_addr")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value == "off":
            return value
        _, _, port = value.rpartition(":")  # no host means 127.0.0.1
        if not (port.isdigit() and int(port) <= 65535):
            raise ValueError("must be host:port (e.g. 127.0.0.1:9108), :port or off")
        return value

    @model_validator(mode="after")
    def _poll_bounds(self) -> Settings:
        if self.poll_min_interval > self.poll_max_interval:
            raise ValueError("poll_min_interval must not exceed poll_max_interval")
        return self

    def origin(self, field: str) -> str | None:
        """The flag or variable a setting came from; None for its default."""
        return self._origins.get(field)


def env_names(field: str) -> list[str]:
    """The environment variables a setting is read from, first one first."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices if str(choice).isupper()]
    return [ENV_PREFIX + field.upper()]


def flag_name(field: str) -> str | None:
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def _environment() -> dict[str, str]:
    """Variable names upper-cased: pydantic-settings reads them regardless of case."""
    return {name.upper(): value for name, value in os.environ.items()}


def _origins(given: dict[str, Any]) -> dict[str, str]:
    environment = _environment()
    origins = {}
    for field in Settings.model_fields:
        if field in given:
            origins[field] = flag_name(field) or field
            continue
        found = [name for name in env_names(field) if name in environment]
        if found:
            origins[field] = found[0]
    return origins


def load_settings(**overrides: object) -> Settings:
    """Build settings from flags (non-None overrides) and the environment.

    A bad value is a ConfigurationError naming the flag or variable it came from."""
    given: dict[str, Any] = {key: value for key, value in overrides.items() if value is not None}
    origins = _origins(given)
    _refuse_both_flow_variables()
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc.errors()[0], origins, given)) from None
    settings._origins = origins
    return settings


def _refuse_both_flow_variables() -> None:
    environment = _environment()
    if "FLOWWORKER_FLOWS" in environment and "FLOWWORKER_FLOW" in environment:
        raise ConfigurationError(
            "FLOWWORKER_FLOWS and FLOWWORKER_FLOW are both set: set one of them")


def _describe(error: ErrorDetails, origins: dict[str, str], given: dict[str, Any]) -> str:
    """`invalid FLOWWORKER_CONCURRENCY='abc': Input should be ...`, one line."""
    message = " ".join(str(error["msg"]).split()).removeprefix("Value error, ")
    field = _field_of(str(error["loc"][0])) if error["loc"] else ""
    if field not in Settings.model_fields:  # a check across settings names each one
        for name in sorted(Settings.model_fields, key=len, reverse=True):
            if name in message:
                message = message.replace(name, _label(name, origins))
        return f"invalid settings: {message}"
    where = _label(field, origins)
    if field == "database_url":  # the message says what is wrong; the URL is never shown
        return f"{where}: {message}"
    value = given[field] if field in given else _environment().get(where, error.get("input"))
    shown = " ".join(map(str, value)) if isinstance(value, list) else value
    joiner = " " if where.startswith("--") else "="
    return f"invalid {where}{joiner}{shown!r}: {message}"


def _field_of(name: str) -> str:
    """The field an error's location names: a variable read through an alias
    is reported under the variable's name."""
    for field in Settings.model_fields:
        if name.upper() in env_names(field):
            return field
    return name


def _label(field: str, origins: dict[str, str]) -> str:
    if field in origins:
        return origins[field]
    default = Settings.model_fields[field].default
    return f"{env_names(field)[0]} (default {default})"


def unknown_variables() -> list[str]:
    """One warning per FLOWWORKER_* variable no setting reads (a typo, most
    often), with the nearest known name when there is one."""
    known = {name for field in Settings.model_fields for name in env_names(field)}
    # Compared without the prefix, which every name shares.
    suffixes = sorted(name.removeprefix(ENV_PREFIX) for name in known)
    warnings = []
    for name in sorted(_environment()):
        if not name.startswith(ENV_PREFIX) or name in known or name.startswith(TEST_PREFIX):
            continue
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1)
        hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
        warnings.append(f"{name} is not a flowworker setting and is ignored{hint}")
    return warnings


def database_url_origin(settings: Settings) -> str | None:
    """Where the database URL came from, for messages about reaching it;
    None when it was a flag of the command itself."""
    origin = settings.origin("database_url")
    if origin is None:
        return (f"no database URL was given, so the default {DEFAULT_DATABASE_URL} was used; "
                "set FLOWWORKER_DATABASE_URL or pass --database-url")
    return None if origin.startswith("--") else f"the URL came from {origin}"
