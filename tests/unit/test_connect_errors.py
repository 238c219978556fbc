"""A failure to connect is one line: configuration (exit 2) when the URL or
the server's setup must change, unreachable (exit 3) when waiting may do."""

from __future__ import annotations

import socket

import anyio
import asyncpg
import pytest

from flowworker import connect_errors, dburl
from flowworker.daemon import listener as listener_module
from flowworker.daemon.db_asyncpg import ConnectionLostError
from flowworker.daemon.listener import Listener
from flowworker.errors import DatabaseRefusedError, DatabaseUnreachableError

SECRET = "Zq7xW3kP9vJm"  # noqa: S105 - a test password
URL = f"postgresql://app:{SECRET}@db.internal:6432/orders"
AT = 'connection failed: connection to server at "10.0.0.5", port 6432 failed: '


@pytest.mark.parametrize(("server_said", "sqlstate", "check"), [
    ('FATAL:  database "orders" does not exist', "3D000", "the database name"),
    ('FATAL:  role "app" does not exist', "28000", "the user name"),
    ('FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "app", database "orders", '
     "no encryption", "28000", "pg_hba.conf"),
    ('FATAL:  password authentication failed for user "app"', "28P01", "password"),
    ("fe_sendauth: no password supplied", "28P01", "password"),
    ('FATAL:  permission denied for database "orders"', "42501", "CONNECT"),
])
def test_libpq_refusals_are_configuration_errors(server_said: str, sqlstate: str,
                                                 check: str) -> None:
    error = connect_errors.from_libpq(URL, AT + server_said)
    assert isinstance(error, DatabaseRefusedError)
    assert error.exit_code == 2
    message = str(error)
    assert message.startswith('database refused the connection: connection to server at '
                              '"10.0.0.5", port 6432 failed: FATAL: ' if "FATAL" in server_said
                              else "database refused the connection: ")
    assert f"(SQLSTATE {sqlstate}); check " in message
    assert check in message


def test_libpq_ssl_refusal_says_what_to_change() -> None:
    error = connect_errors.from_libpq(
        URL, AT + "server does not support SSL, but SSL was required")
    assert isinstance(error, DatabaseRefusedError)
    assert str(error).endswith("server does not support SSL, but SSL was required; the server "
                               "does not offer SSL: use sslmode=prefer or disable, or enable "
                               "SSL there")


@pytest.mark.parametrize("said", [
    "Connection refused",
    "FATAL:  the database system is starting up",
    "FATAL:  sorry, too many clients already",
    'FATAL:  database "orders" is not currently accepting connections',
])
def test_libpq_failures_worth_waiting_for_are_unreachable(said: str) -> None:
    error = connect_errors.from_libpq(URL, AT + said)
    assert type(error) is DatabaseUnreachableError
    assert error.exit_code == 3
    assert str(error) == (f'database unreachable: connection to server at "10.0.0.5", port '
                          f"6432 failed: {' '.join(said.split())}")


@pytest.mark.parametrize(("exc", "sqlstate"), [
    (asyncpg.InvalidCatalogNameError('database "orders" does not exist'), "3D000"),
    (asyncpg.InvalidAuthorizationSpecificationError('role "app" does not exist'), "28000"),
    (asyncpg.InvalidPasswordError('password authentication failed for user "app"'), "28P01"),
    (asyncpg.InsufficientPrivilegeError('permission denied for database "orders"'), "42501"),
])
def test_asyncpg_refusals_go_by_sqlstate(exc: Exception, sqlstate: str) -> None:
    error = connect_errors.from_asyncpg(URL, exc)
    assert isinstance(error, DatabaseRefusedError)
    assert str(error).startswith(
        f"database refused the connection: db.internal:6432: {exc} (SQLSTATE {sqlstate}); ")


@pytest.mark.parametrize(("exc", "reason"), [
    (ConnectionRefusedError(111, "Connect call failed ('10.0.0.5', 6432)"), "Connection refused"),
    (socket.gaierror(-2, "Name or service not known"), "Name or service not known"),
    (TimeoutError(), "timed out"),
    (asyncpg.CannotConnectNowError("the database system is starting up"),
     "the database system is starting up (SQLSTATE 57P03)"),
])
def test_asyncpg_failures_name_the_server_they_tried(exc: Exception, reason: str) -> None:
    error = connect_errors.from_asyncpg(URL, exc)
    assert type(error) is DatabaseUnreachableError
    assert str(error) == f"database unreachable: connection to db.internal:6432 failed: {reason}"


def test_asyncpg_ssl_refusal_is_a_configuration_error() -> None:
    error = connect_errors.from_asyncpg(
        URL, ConnectionError('PostgreSQL server at "db.internal:6432" rejected SSL upgrade'))
    assert isinstance(error, DatabaseRefusedError)
    assert "use sslmode=prefer or disable" in str(error)


def test_no_message_shows_the_password() -> None:
    said = f'FATAL:  password authentication failed for user "app" ({SECRET})'
    assert SECRET not in str(connect_errors.from_libpq(URL, AT + said))
    assert SECRET not in str(connect_errors.from_asyncpg(URL, asyncpg.InvalidPasswordError(said)))


@pytest.mark.parametrize(("url", "servers"), [
    ("postgresql://u@/db", "localhost:5432"),
    ("postgresql://u@h1,h2:7/db", "h1:5432, h2:7"),  # libpq: the first port is empty
    ("postgresql://u@h1:5,h2:6/db", "h1:5, h2:6"),
    ("host=/var/run/postgresql dbname=db", "/var/run/postgresql/.s.PGSQL.5432"),
])
def test_servers_as_named_in_messages(url: str, servers: str) -> None:
    assert dburl.servers(url) == servers


class RefusingConnect:
    async def __call__(self, url: str, **_: object) -> asyncpg.Connection:
        raise asyncpg.InvalidCatalogNameError('database "orders" does not exist')


def make_listener(monkeypatch: pytest.MonkeyPatch) -> Listener:
    monkeypatch.setattr(listener_module, "connect", RefusingConnect())

    async def send_probe(_channel: str) -> None:
        return None

    return Listener(URL, ["orders"], lambda _slug: None, send_probe, refuse_without=False)


async def test_the_listener_stops_the_worker_when_refused_at_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    listener = make_listener(monkeypatch)
    with (pytest.raises(DatabaseRefusedError, match=r"\(SQLSTATE 3D000\); check the database"),
          anyio.fail_after(5)):  # not retried: waiting would not mend the URL
        await listener.run()


async def test_the_listener_waits_out_a_refusal_once_it_has_listened(
        monkeypatch: pytest.MonkeyPatch) -> None:
    listener = make_listener(monkeypatch)
    listener.settled.set()  # it had connected and listened before
    with pytest.raises(ConnectionLostError, match=r"database refused the connection"):
        await listener._listen_until_lost()
