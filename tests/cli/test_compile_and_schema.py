"""`flowworker schema` and `flowworker compile`, run as the console script."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import psycopg

from examples.orders import orders
from flowworker.compiler import compile_flow
from flowworker.schema import migrations, schema_sql, schema_version
from tests.cli.helpers import SCRIPT, assert_one_error_line, run_cli
from tests.sql.schema.test_schema import baseline_sql

FILE_NAME = re.compile(r"^\d{14}_create_orders_flow\.sql$")


def test_the_console_script_is_installed_next_to_python() -> None:
    assert SCRIPT.exists(), "pip install -e . should put `flowworker` in the venv"


def test_schema_prints_the_core_schema_sql() -> None:
    result = run_cli("schema")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == schema_sql()
    assert "CREATE SCHEMA flowworker;" in result.stdout
    assert "CREATE FUNCTION flowworker.start_flow(" in result.stdout


def test_schema_since_a_version_prints_the_migrations_after_it(empty_db_url: str) -> None:
    """What a Flyway or Alembic user at version 1 applies to be current."""
    result = run_cli("schema", "--since", "1")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "".join(m.sql for m in migrations())
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(baseline_sql())
        conn.execute(result.stdout.encode())
        row = conn.execute("SELECT max(version) FROM flowworker.migrations").fetchone()
    assert row == (schema_version(),)
    assert run_cli("schema", "--since", str(schema_version())).stdout == ""
    for bad in ("0", str(schema_version() + 1)):
        assert_one_error_line(run_cli("schema", "--since", bad), 2)


def test_python_dash_m_flowworker_is_the_same_program() -> None:
    result = run_cli("schema", prefix=[sys.executable, "-m", "flowworker"])
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == schema_sql()


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for name in ("run", "compile", "schema", "migrate"):
        assert name in result.stdout


def test_compile_prints_deterministic_sql() -> None:
    first = run_cli("compile", "--app", "examples.orders")
    second = run_cli("compile", "--app", "examples.orders")
    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout == second.stdout
    assert first.stdout == compile_flow(orders)
    assert first.stdout.startswith("-- flowworker flow 'orders'")
    assert "SELECT flowworker.add_step('orders', 'pack_item', deps => ARRAY['list_items']" \
        in first.stdout


def test_compile_takes_the_app_from_the_environment() -> None:
    result = run_cli("compile", env={"FLOWWORKER_APP": "examples.orders"})
    assert (result.returncode, result.stdout) == (0, compile_flow(orders))


def test_compile_flow_selects_one_flow() -> None:
    result = run_cli("compile", "--app", "examples.orders", "--flow", "orders")
    assert (result.returncode, result.stdout) == (0, compile_flow(orders))


def test_compile_out_writes_one_file_per_flow(tmp_path: Path) -> None:
    out = tmp_path / "flows"
    result = run_cli("compile", "--app", "examples.orders", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    files = sorted(out.iterdir())
    assert len(files) == 1
    assert FILE_NAME.match(files[0].name), files[0].name
    assert files[0].read_text() == compile_flow(orders)
    assert result.stderr == f"wrote {files[0]}\n"


def test_compile_out_again_adds_no_file_for_an_unchanged_flow(tmp_path: Path) -> None:
    assert run_cli("compile", "--app", "examples.orders", "--out", str(tmp_path)).returncode == 0
    before = sorted(tmp_path.iterdir())
    again = run_cli("compile", "--app", "examples.orders", "--out", str(tmp_path))
    assert (again.returncode, again.stderr) == (0, "orders: unchanged\n")
    assert sorted(tmp_path.iterdir()) == before
