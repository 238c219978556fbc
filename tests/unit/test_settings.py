"""Settings: flags, then FLOWWORKER_* environment variables, then defaults."""

from __future__ import annotations

import os

import pytest

from flowworker.errors import ConfigurationError
from flowworker.settings import DEFAULT_DATABASE_URL, load_settings

FLAG_URL = "postgresql://flag@db-flag/app"
OWN_URL = "postgresql://own@db-own/app"
GENERIC_URL = "postgresql://generic@db-generic/app"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the environment the tests run in."""
    for name in list(os.environ):
        if name.startswith("FLOWWORKER_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.app is None
    assert settings.flows == []
    assert (settings.concurrency, settings.batch_size, settings.signal) == (10, 10, "notify")
    assert settings.shutdown_timeout == 30.0
    assert settings.metrics_addr == "127.0.0.1:9108"
    assert settings.drain is False


def test_flowworker_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWWORKER_DATABASE_URL", OWN_URL)
    assert load_settings().database_url == OWN_URL


def test_database_url_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", GENERIC_URL)
    assert load_settings().database_url == GENERIC_URL


def test_flowworker_database_url_wins_over_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", GENERIC_URL)
    monkeypatch.setenv("FLOWWORKER_DATABASE_URL", OWN_URL)
    assert load_settings().database_url == OWN_URL


def test_the_flag_wins_over_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", GENERIC_URL)
    monkeypatch.setenv("FLOWWORKER_DATABASE_URL", OWN_URL)
    assert load_settings(database_url=FLAG_URL).database_url == FLAG_URL


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWWORKER_APP", "env_app.flows")
    monkeypatch.setenv("FLOWWORKER_CONCURRENCY", "5")
    monkeypatch.setenv("FLOWWORKER_SIGNAL", "poll")
    from_env = load_settings()
    assert (from_env.app, from_env.concurrency, from_env.signal) == ("env_app.flows", 5, "poll")
    flagged = load_settings(app="flag_app", concurrency=7, signal="notify")
    assert (flagged.app, flagged.concurrency, flagged.signal) == ("flag_app", 7, "notify")


def test_a_flag_left_out_is_none_and_keeps_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWWORKER_BATCH_SIZE", "3")
    assert load_settings(batch_size=None, concurrency=4).batch_size == 3


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"batch_size": 100_000}, "batch_size"),
        ({"signal": "smoke"}, "signal"),
        ({"shutdown_timeout": -1}, "shutdown_timeout"),
        ({"poll_min_interval": 0}, "poll_min_interval"),
        ({"log_format": "xml"}, "log_format"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"metrics_addr": "nowhere"}, "metrics_addr"),
        ({"metrics_addr": "127.0.0.1:99999"}, "metrics_addr"),
        ({"metrics_addr": "localhost:http"}, "metrics_addr"),
    ],
)
def test_invalid_flag_values_are_configuration_errors(overrides: dict[str, object],
                                                      field: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"^invalid setting {field}: ") as info:
        load_settings(**overrides)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_poll_bounds_are_checked_together() -> None:
    with pytest.raises(ConfigurationError, match=r"poll_min_interval must not exceed"):
        load_settings(poll_min_interval=2.0, poll_max_interval=1.0)


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("FLOWWORKER_CONCURRENCY", "many", "concurrency"),
        ("FLOWWORKER_SIGNAL", "smoke", "signal"),
        ("FLOWWORKER_SHUTDOWN_TIMEOUT", "-3", "shutdown_timeout"),
    ],
)
def test_invalid_environment_values_are_configuration_errors(
        monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=rf"^invalid setting {field}: ") as info:
        load_settings()
    assert info.value.exit_code == 2


def test_valid_special_values() -> None:
    settings = load_settings(metrics_addr="off", log_level="debug")
    assert (settings.metrics_addr, settings.log_level) == ("off", "DEBUG")
    assert load_settings(metrics_addr=":0").metrics_addr == ":0"
    assert load_settings(metrics_addr="0.0.0.0:9108").metrics_addr == "0.0.0.0:9108"
