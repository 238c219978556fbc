"""Failures exit with the documented code and one `flowworker: error:` line."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowworker.devdb import free_port
from tests.cli.helpers import assert_one_error_line, run_cli


def closed_port_url() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"


def test_an_unreachable_database_exits_3() -> None:
    line = assert_one_error_line(run_cli("migrate", "--database-url", closed_port_url()), 3)
    assert line.startswith("flowworker: error: database unreachable: ")
    assert "Connection refused" in line


@pytest.mark.parametrize("variable", ["FLOWWORKER_DATABASE_URL", "DATABASE_URL"])
def test_an_unreachable_database_from_the_environment_exits_3(variable: str) -> None:
    assert_one_error_line(run_cli("migrate", env={variable: closed_port_url()}), 3)


def test_a_malformed_database_url_exits_2() -> None:
    line = assert_one_error_line(run_cli("migrate", "--database-url", "not a url"), 2)
    assert "invalid database URL" in line


@pytest.mark.parametrize("command", ["run", "compile"])
def test_no_app_exits_2(command: str) -> None:
    line = assert_one_error_line(run_cli(command), 2)
    assert line == ("flowworker: error: no application module: "
                    "pass --app MODULE or set FLOWWORKER_APP")


@pytest.mark.parametrize("command", ["run", "compile"])
def test_an_app_that_does_not_import_exits_2(command: str) -> None:
    line = assert_one_error_line(run_cli(command, "--app", "no_such_app_xyz.flows"), 2)
    assert "cannot import application module 'no_such_app_xyz.flows'" in line


def test_an_app_that_raises_while_importing_exits_2(tmp_path: Path) -> None:
    (tmp_path / "exploding_app.py").write_text(
        'raise RuntimeError("boom\\nwith a second line")\n')
    result = run_cli("compile", "--app", "exploding_app", env={"PYTHONPATH": str(tmp_path)})
    line = assert_one_error_line(result, 2)
    assert line.endswith("importing 'exploding_app' failed: RuntimeError: boom")


def test_an_app_with_a_bad_definition_exits_2(tmp_path: Path) -> None:
    (tmp_path / "cyclic_app.py").write_text(
        "from flowworker import Flow\n"
        "flow = Flow('cyclic')\n"
        "@flow.step(depends_on=['again'])\n"
        "def again(deps, ctx):\n"
        "    return None\n")
    result = run_cli("compile", "--app", "cyclic_app", env={"PYTHONPATH": str(tmp_path)})
    line = assert_one_error_line(result, 2)
    assert "step 'again' depends on itself" in line


def test_an_unknown_flow_slug_exits_2() -> None:
    line = assert_one_error_line(
        run_cli("compile", "--app", "examples.orders", "--flow", "nope"), 2)
    assert "unknown flow 'nope'" in line


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["run", "--app", "examples.orders", "--concurrency", "0"], "invalid --concurrency 0"),
        (["run", "--app", "examples.orders", "--concurrency", "many"], "--concurrency"),
        (["run", "--app", "examples.orders", "--signal", "smoke"], "invalid --signal 'smoke'"),
        (["run", "--app", "examples.orders", "--shutdown-timeout", "-1"],
         "invalid --shutdown-timeout -1"),
        (["run", "--app", "examples.orders", "--metrics-addr", "nowhere"],
         "invalid --metrics-addr 'nowhere'"),
        (["migrate", "--dir", "/nonexistent/flows"], "--dir"),
        (["migrate", "--lock-timeout", "0"], "invalid --lock-timeout 0"),
        (["migrate", "--lock-timeout", "soon"], "--lock-timeout"),
        (["compile", "--no-such-option"], "--no-such-option"),
    ],
)
def test_a_bad_option_value_exits_2(args: list[str], mentions: str) -> None:
    line = assert_one_error_line(run_cli(*args), 2)
    assert mentions in line


def test_a_bad_environment_value_exits_2() -> None:
    result = run_cli("run", "--app", "examples.orders", env={"FLOWWORKER_CONCURRENCY": "lots"})
    line = assert_one_error_line(result, 2)
    assert line == ("flowworker: error: invalid FLOWWORKER_CONCURRENCY='lots': Input should be "
                    "a valid integer, unable to parse string as an integer")


def test_an_unknown_command_exits_2() -> None:
    line = assert_one_error_line(run_cli("frobnicate"), 2)
    assert "frobnicate" in line


def test_no_command_shows_the_help_and_exits_2() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "migrate" in result.stdout + result.stderr
