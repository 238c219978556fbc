"""What a newcomer meets first (issue 21): each configuration mistake is one
`flowworker: error:` line with the documented exit code, naming the
variable, flag, host or port at fault; warnings never change the exit code."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from flowworker.devdb import free_port
from flowworker.settings import DEFAULT_DATABASE_URL
from tests.cli.helpers import assert_one_error_line, run_cli
from tests.support.database import PgServer

RUN = ["run", "--app", "examples.orders", "--metrics-addr", "off"]
COMMANDS = {"migrate": ["migrate"], "run": RUN}
UNKNOWN = "FLOWWORKER_CONCURENCY"
WARNING = (f"flowworker: warning: {UNKNOWN} is not a flowworker setting and is ignored; "
           "did you mean FLOWWORKER_CONCURRENCY?")


def something_listens_on(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------- the database URL

@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_url_says_the_default_is_used_and_how_to_set_one(command: str) -> None:
    if something_listens_on(5432):
        pytest.skip("a server listens on the default port here")
    line = assert_one_error_line(run_cli(*COMMANDS[command]), 3)
    assert line.startswith("flowworker: error: database unreachable: ")
    assert line.endswith(f"; no database URL was given, so the default {DEFAULT_DATABASE_URL} "
                         "was used; set FLOWWORKER_DATABASE_URL or pass --database-url")


@pytest.mark.parametrize(("command", "refused"), [
    ("migrate", 'connection to server at "127.0.0.1", port {port} failed: Connection refused'),
    ("run", "connection to 127.0.0.1:{port} failed: Connection refused"),
])
def test_a_dead_port_is_named_with_its_host(command: str, refused: str) -> None:
    port = free_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    line = assert_one_error_line(run_cli(*COMMANDS[command], "--database-url", url), 3)
    assert line == f"flowworker: error: database unreachable: {refused.format(port=port)}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("variable", ["FLOWWORKER_DATABASE_URL", "DATABASE_URL"])
def test_a_url_from_the_environment_is_named(command: str, variable: str) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    line = assert_one_error_line(run_cli(*COMMANDS[command], env={variable: url}), 3)
    assert line.endswith(f"; the URL came from {variable}")


@pytest.fixture
def absent_database(pg_server: PgServer) -> str:
    return pg_server.url("no_such_database_xyz")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_database_that_does_not_exist_is_a_configuration_error(
        command: str, absent_database: str) -> None:
    result = run_cli(*COMMANDS[command], env={"FLOWWORKER_DATABASE_URL": absent_database})
    line = assert_one_error_line(result, 2)
    assert line.startswith("flowworker: error: database refused the connection: ")
    assert ('database "no_such_database_xyz" does not exist (SQLSTATE 3D000); check the '
            "database name in the URL; the URL came from FLOWWORKER_DATABASE_URL") in line


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_role_that_does_not_exist_is_a_configuration_error(
        command: str, pg_server: PgServer) -> None:
    url = make_conninfo(pg_server.url("postgres"), user="no_such_role_xyz")
    line = assert_one_error_line(run_cli(*COMMANDS[command], "--database-url", url), 2)
    assert line.startswith("flowworker: error: database refused the connection: ")
    # A server that asks for a password does not say whether the role exists.
    assert "(SQLSTATE 28000); check the user name" in line or "(SQLSTATE 28P01)" in line


@pytest.fixture
def ssl_required_url(pg_server: PgServer) -> str:
    url = make_conninfo(pg_server.url("postgres"), sslmode="require")
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError:
        return url
    pytest.skip("the test server offers SSL")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_ssl_the_server_does_not_offer_is_a_configuration_error(
        command: str, ssl_required_url: str) -> None:
    line = assert_one_error_line(
        run_cli(*COMMANDS[command], "--database-url", ssl_required_url), 2)
    assert line.startswith("flowworker: error: database refused the connection: ")
    assert line.endswith("the server does not offer SSL: use sslmode=prefer or disable, "
                         "or enable SSL there")


# ---------------------------------------------------------------- variables

@pytest.fixture
def orders_applied(db_url: str, tmp_path: Path) -> str:
    compiled = run_cli("compile", "--app", "examples.orders", "--out", str(tmp_path))
    assert compiled.returncode == 0, compiled.stderr
    migrated = run_cli("migrate", "--database-url", db_url, "--dir", str(tmp_path))
    assert migrated.returncode == 0, migrated.stderr
    return db_url


@pytest.mark.parametrize("value", ["orders", "orders,", '["orders"]'])
def test_flowworker_flows_takes_what_people_type(value: str, orders_applied: str) -> None:
    result = run_cli(*RUN, "--drain", "--database-url", orders_applied,
                     env={"FLOWWORKER_FLOWS": value})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("variable", ["FLOWWORKER_FLOWS", "FLOWWORKER_FLOW"])
def test_a_flow_list_is_read_comma_separated_and_named_when_wrong(variable: str) -> None:
    line = assert_one_error_line(run_cli(*RUN, env={variable: "orders,nope"}), 2)
    assert line == (f"flowworker: error: unknown flow 'nope' ({variable}); the app defines: "
                    "orders")


@pytest.mark.parametrize(("env", "message"), [
    ({"FLOWWORKER_CONCURRENCY": "abc"}, "invalid FLOWWORKER_CONCURRENCY='abc': Input should be "
     "a valid integer, unable to parse string as an integer"),
    ({"FLOWWORKER_METRICS_ADDR": "localhost"}, "invalid FLOWWORKER_METRICS_ADDR='localhost': must "
     "be host:port (e.g. 127.0.0.1:9108), :port or off"),
    ({"FLOWWORKER_SYNC_THREADS": "-1"}, "invalid FLOWWORKER_SYNC_THREADS='-1': Input should be "
     "greater than or equal to 0"),
    ({"DATABASE_URL": "postgresql://h:0/db"}, "DATABASE_URL: invalid database URL: the port "
     "must be a number from 1 to 65535"),
    ({"FLOWWORKER_FLOWS": "a", "FLOWWORKER_FLOW": "b"}, "FLOWWORKER_FLOWS and FLOWWORKER_FLOW "
     "are both set: set one of them"),
])
def test_every_settings_error_names_its_variable(env: dict[str, str], message: str) -> None:
    result = run_cli("run", "--app", "examples.orders", env=env)
    assert assert_one_error_line(result, 2) == f"flowworker: error: {message}"


def test_an_unknown_variable_is_a_warning_not_an_error() -> None:
    result = run_cli("compile", "--app", "examples.orders", env={UNKNOWN: "3"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [WARNING]
    assert "flowworker.create_flow" in result.stdout


def test_a_warning_leaves_the_error_and_its_exit_code_alone() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    result = run_cli("migrate", "--database-url", url, env={UNKNOWN: "3"})
    assert result.returncode == 3, result.stderr
    warning, error = result.stderr.splitlines()
    assert warning == WARNING
    assert error.startswith("flowworker: error: database unreachable: ")


# ---------------------------------------------------------------- ports, apps, help

@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_metrics_port_in_use_is_named_with_the_way_out(db_url: str, taken_port: int) -> None:
    result = run_cli("run", "--app", "examples.orders", "--database-url", db_url,
                     "--metrics-addr", f"127.0.0.1:{taken_port}")
    assert assert_one_error_line(result, 2) == (
        f"flowworker: error: metrics address 127.0.0.1:{taken_port} is in use (another worker "
        "on this host?); give each worker its own --metrics-addr (FLOWWORKER_METRICS_ADDR) "
        "or `off`")


@pytest.mark.parametrize("command", ["run", "compile"])
def test_an_app_given_as_a_file_suggests_the_module_name(command: str, tmp_path: Path) -> None:
    result = run_cli(command, "--app", "myapp/flows.py", cwd=tmp_path)
    assert assert_one_error_line(result, 2) == (
        "flowworker: error: --app 'myapp/flows.py' is a file path, but --app (FLOWWORKER_APP) "
        "takes a module name: try --app myapp.flows")


@pytest.mark.parametrize("command", ["run", "compile"])
def test_an_app_not_found_says_where_python_looked(command: str, tmp_path: Path) -> None:
    result = run_cli(command, "--app", "myapp.flows", cwd=tmp_path)
    assert assert_one_error_line(result, 2) == (
        "flowworker: error: cannot import application module 'myapp.flows': No module named "
        f"'myapp' (looked in the working directory {tmp_path} and PYTHONPATH (not set); run "
        "from the folder that holds 'myapp', or add that folder to PYTHONPATH)")


def run_help() -> str:
    result = subprocess.run([*run_cli("--help").args[:-1], "run", "--help"], env={
        "COLUMNS": "100", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_run_help_shows_drain_as_a_flag_and_says_every_flow_is_served() -> None:
    text = run_help()
    [drain] = [line for line in text.splitlines() if line.strip().startswith("--drain")]
    assert drain.split()[1] == "Exit", drain  # no value after the flag
    assert "<bool>" not in text
    assert "without --flow the worker serves every flow of the app" in " ".join(text.split())
    assert "[env: FLOWWORKER_DATABASE_URL, DATABASE_URL]" in " ".join(text.split())
