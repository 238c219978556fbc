"""Settings: flags, then FLOWWORKER_* environment variables, then defaults."""

from __future__ import annotations

import os

import pytest

from flowworker.errors import ConfigurationError
from flowworker.settings import (
    DEFAULT_DATABASE_URL,
    database_url_origin,
    load_settings,
    unknown_variables,
)

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
    ("overrides", "flag"),
    [
        ({"concurrency": 0}, "--concurrency 0"),
        ({"batch_size": 100_000}, "--batch-size 100000"),
        ({"signal": "smoke"}, "--signal 'smoke'"),
        ({"shutdown_timeout": -1}, "--shutdown-timeout -1"),
        ({"poll_min_interval": 0}, "--poll-min-interval 0"),
        ({"log_format": "xml"}, "--log-format 'xml'"),
        ({"metrics_addr": "nowhere"}, "--metrics-addr 'nowhere'"),
        ({"metrics_addr": "127.0.0.1:99999"}, "--metrics-addr '127.0.0.1:99999'"),
        ({"metrics_addr": "localhost:http"}, "--metrics-addr 'localhost:http'"),
        ({"flows": ["a", 1]}, "--flow 'a 1'"),
        ({"migrate_lock_timeout": 0}, "--lock-timeout 0"),
    ],
)
def test_invalid_flag_values_name_the_flag(overrides: dict[str, object], flag: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(**overrides)
    assert str(info.value).startswith(f"invalid {flag}: ")
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_poll_bounds_are_checked_together_and_named_as_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(poll_min_interval=2.0)
    assert str(info.value) == ("invalid settings: --poll-min-interval must not exceed "
                               "FLOWWORKER_POLL_MAX_INTERVAL (default 1.0)")
    monkeypatch.setenv("FLOWWORKER_POLL_MAX_INTERVAL", "0.5")
    with pytest.raises(ConfigurationError) as info:
        load_settings(poll_min_interval=2.0)
    assert str(info.value) == ("invalid settings: --poll-min-interval must not exceed "
                               "FLOWWORKER_POLL_MAX_INTERVAL")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FLOWWORKER_CONCURRENCY", "many", "invalid FLOWWORKER_CONCURRENCY='many': Input should "
         "be a valid integer, unable to parse string as an integer"),
        ("FLOWWORKER_SIGNAL", "smoke", "invalid FLOWWORKER_SIGNAL='smoke': Input should be "
         "'notify' or 'poll'"),
        ("FLOWWORKER_SHUTDOWN_TIMEOUT", "-3", "invalid FLOWWORKER_SHUTDOWN_TIMEOUT='-3': Input "
         "should be greater than or equal to 0"),
        ("FLOWWORKER_LOG_LEVEL", "LOUD", "invalid FLOWWORKER_LOG_LEVEL='LOUD': must be DEBUG, "
         "INFO, WARNING, ERROR or CRITICAL"),
        ("FLOWWORKER_SYNC_THREADS", "-1", "invalid FLOWWORKER_SYNC_THREADS='-1': Input should "
         "be greater than or equal to 0"),
        ("FLOWWORKER_FLOWS", "[1]", "invalid FLOWWORKER_FLOWS='[1]': Input should be a valid "
         "string"),
        ("FLOWWORKER_FLOWS", "[oops", "invalid FLOWWORKER_FLOWS='[oops': must be slugs "
         "separated by commas, or a JSON list"),
        ("FLOWWORKER_FLOW", "[oops", "invalid FLOWWORKER_FLOW='[oops': must be slugs "
         "separated by commas, or a JSON list"),
        ("FLOWWORKER_DATABASE_URL", "postgresql://h:0/db", "FLOWWORKER_DATABASE_URL: invalid "
         "database URL: the port must be a number from 1 to 65535"),
        ("DATABASE_URL", "postgresql://h:0/db", "DATABASE_URL: invalid database URL: the port "
         "must be a number from 1 to 65535"),
    ],
)
def test_invalid_environment_values_name_the_variable(
        monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert str(info.value) == message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("variable", "value", "flows"),
    [
        ("FLOWWORKER_FLOWS", "signup", ["signup"]),
        ("FLOWWORKER_FLOWS", "a,b", ["a", "b"]),
        ("FLOWWORKER_FLOWS", " a , b ,", ["a", "b"]),
        ("FLOWWORKER_FLOWS", '["a", "b"]', ["a", "b"]),
        ("FLOWWORKER_FLOWS", "", []),
        # Named like the --flow flag, as the other variables are.
        ("FLOWWORKER_FLOW", "orders", ["orders"]),
        ("FLOWWORKER_FLOW", "orders,signup", ["orders", "signup"]),
    ],
)
def test_flow_lists_as_people_type_them(monkeypatch: pytest.MonkeyPatch, variable: str,
                                        value: str, flows: list[str]) -> None:
    monkeypatch.setenv(variable, value)
    settings = load_settings()
    assert settings.flows == flows
    assert settings.origin("flows") == variable


def test_the_flow_flag_wins_over_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWWORKER_FLOWS", "a,b")
    assert load_settings(flows=["c"]).flows == ["c"]


def test_both_flow_variables_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWWORKER_FLOWS", "a")
    monkeypatch.setenv("FLOWWORKER_FLOW", "b")
    with pytest.raises(ConfigurationError, match=r"^FLOWWORKER_FLOWS and FLOWWORKER_FLOW are "
                                                 r"both set: set one of them$"):
        load_settings()


def test_unknown_variables_are_warned_about_one_line_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWWORKER_CONCURENCY", "3")
    monkeypatch.setenv("FLOWWORKER_COLOUR", "blue")
    monkeypatch.setenv("FLOWWORKER_TEST_DATABASE_URL", "postgresql://test")  # the test suite's
    monkeypatch.setenv("FLOWWORKER_CONCURRENCY", "3")
    monkeypatch.setenv("FLOWWORKER_FLOW", "orders")
    monkeypatch.setenv("DATABASE_URL", GENERIC_URL)
    assert unknown_variables() == [
        "FLOWWORKER_COLOUR is not a flowworker setting and is ignored",
        "FLOWWORKER_CONCURENCY is not a flowworker setting and is ignored; "
        "did you mean FLOWWORKER_CONCURRENCY?",
    ]
    assert load_settings().concurrency == 3  # a warning, not an error


def test_every_setting_knows_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", GENERIC_URL)
    monkeypatch.setenv("FLOWWORKER_BATCH_SIZE", "3")
    settings = load_settings(concurrency=4, migrate_lock_timeout=5)
    assert settings.origin("database_url") == "DATABASE_URL"
    assert settings.origin("batch_size") == "FLOWWORKER_BATCH_SIZE"
    assert settings.origin("concurrency") == "--concurrency"
    assert settings.origin("migrate_lock_timeout") == "--lock-timeout"
    assert settings.origin("signal") is None


def test_database_errors_say_where_the_url_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    assert database_url_origin(load_settings()) == (
        f"no database URL was given, so the default {DEFAULT_DATABASE_URL} was used; "
        "set FLOWWORKER_DATABASE_URL or pass --database-url")
    assert database_url_origin(load_settings(database_url=FLAG_URL)) is None
    monkeypatch.setenv("DATABASE_URL", GENERIC_URL)
    assert database_url_origin(load_settings()) == "the URL came from DATABASE_URL"


def test_valid_special_values() -> None:
    settings = load_settings(metrics_addr="off", log_level="debug")
    assert (settings.metrics_addr, settings.log_level) == ("off", "DEBUG")
    assert load_settings(metrics_addr=":0").metrics_addr == ":0"
    assert load_settings(metrics_addr="0.0.0.0:9108").metrics_addr == "0.0.0.0:9108"
