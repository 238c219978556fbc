"""Settings: flags, then FLOWWORKER_* environment variables, then defaults."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from flowworker import dburl
from flowworker.durations import parse_duration
from flowworker.errors import ConfigurationError

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class Settings(BaseSettings):
    """Everything a flowworker command can be configured with."""

    model_config = SettingsConfigDict(env_prefix="FLOWWORKER_", extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("FLOWWORKER_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="libpq URL of the database. Default: postgres on 127.0.0.1:5432.",
    )
    app: str | None = Field(None, description="Module that defines the flows, e.g. myapp.flows.")
    flows: list[str] = Field(default_factory=list, description="Flow slugs a worker runs.")
    concurrency: int = Field(10, ge=1, le=10_000, description="Tasks run at once per worker.")
    batch_size: int = Field(10, ge=1, le=1_000, description="Most tasks claimed per round trip.")
    signal: Literal["notify", "poll"] = Field(
        "notify", description="notify: LISTEN plus a fallback poll; poll: polling only.")
    poll_min_interval: float = Field(
        0.05, gt=0, description="Seconds: shortest wait between polls when polling finds nothing.")
    poll_max_interval: float = Field(
        1.0, gt=0, description="Seconds: longest wait between polls; also the NOTIFY fallback.")
    shutdown_timeout: float = Field(
        30.0, ge=0, description="Seconds running handlers get to finish after SIGTERM/SIGINT.")
    claim_grace: int = Field(
        5, ge=1, description="Seconds a claim stays hidden beyond the task timeout.")
    heartbeat_interval: float = Field(5.0, gt=0, description="Seconds between worker heartbeats.")
    sync_threads: int = Field(
        0, ge=0, description="Threads for plain `def` handlers; 0 means --concurrency.")
    metrics_addr: str = Field(
        "127.0.0.1:9108", description="host:port for /metrics, /healthz, /readyz; `off` disables.")
    drain: bool = Field(False, description="Exit 0 once the flows have no runnable work left.")
    log_format: Literal["auto", "human", "json"] = Field(
        "auto", description="auto: human on a terminal, JSON lines otherwise.")
    log_level: str = Field("INFO", description="Python logging level name.")
    statement_cache_size: int = Field(
        100, ge=0, description="Prepared statements kept per connection; 0 behind PgBouncer "
        "in transaction pooling mode (which cannot keep them).")
    listen_unavailable: Literal["poll", "refuse"] = Field(
        "poll", description="When NOTIFY cannot reach the worker (e.g. through PgBouncer in "
        "transaction mode): poll: fall back to polling; refuse: exit 2.")
    command_timeout: float = Field(
        30.0, gt=0, description="Seconds before a database call counts as lost (a half-open "
        "connection); it is then retried on a new connection.")
    migrate_lock_timeout: float = Field(
        60.0, gt=0, le=86_400, description="Seconds `flowworker migrate` waits for the "
        "migrate lock (held by another migrator, or by any session that took it) before it "
        "exits 1 naming the holder.")
    prune_after: timedelta | None = Field(
        None, description="Delete runs that ended, and workers that stopped, longer ago than "
        "this (e.g. 14d; s, m, h, d, w), in the background, one worker at a time; every few "
        "minutes. None or `off` (the default): never.")

    @field_validator("prune_after", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            return None if value.strip().lower() in {"", "off"} else parse_duration(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _parsable_url(cls, value: str) -> str:
        try:
            dburl.parse(value)
        except ConfigurationError as exc:  # its message never shows the URL
            raise PydanticCustomError("database_url", str(exc)) from None
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


def load_settings(**overrides: object) -> Settings:
    """Build settings from flags (non-None overrides) and the environment."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigurationError(f"invalid setting {where}: {first['msg']}") from None
