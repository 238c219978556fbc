"""`flowworker migrate`: the core schema, compiled flows, and starting a run."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flowworker.schema import migrations, schema_version
from tests.cli.helpers import assert_one_error_line, clean_env, command, run_cli
from tests.sql.schema.test_schema import baseline_sql

MIGRATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('flowworker.migrate'))"


def installed_versions(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, name FROM flowworker.migrations ORDER BY 1")
        return [(int(version), str(name)) for version, name in rows]


def expected_versions() -> list[tuple[int, str]]:
    """Version 1 (the first release), then one row per migration since."""
    return [(1, "initial"), *((m.version, m.name) for m in migrations())]


def definitions(url: str) -> dict[str, Any]:
    """Everything the flow definitions wrote, to compare before and after."""
    with psycopg.connect(url) as conn:
        return {
            "flows": conn.execute("SELECT * FROM flowworker.flows ORDER BY flow_slug").fetchall(),
            "steps": conn.execute(
                "SELECT * FROM flowworker.steps ORDER BY flow_slug, step_slug").fetchall(),
            "deps": conn.execute("SELECT * FROM flowworker.deps ORDER BY 1, 2, 3").fetchall(),
        }


def compile_orders(out: Path) -> Path:
    result = run_cli("compile", "--app", "examples.orders", "--out", str(out))
    assert result.returncode == 0, result.stderr
    (path,) = out.iterdir()
    return path


def plain_sql(url: str, query: str) -> list[str]:
    """One row of `query`, run as a user would: through psql when installed."""
    psql = shutil.which("psql")
    if psql is None:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(query.encode()).fetchone()
            assert row is not None
            return [str(value) for value in row]
    result = subprocess.run(
        [psql, url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-c", query],
        capture_output=True, text=True, timeout=60, check=False, env=clean_env())
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split("|")


def test_migrate_installs_the_schema_on_an_empty_database(empty_db_url: str) -> None:
    result = run_cli("migrate", "--database-url", empty_db_url)
    assert result.returncode == 0, result.stderr
    assert installed_versions(empty_db_url) == expected_versions()
    assert expected_versions()[-1][0] == schema_version()
    assert f"applied schema version {schema_version()}\n" in result.stderr
    assert "applied migration" not in result.stderr, "a fresh install runs no migration"
    assert result.stderr.endswith("schema is current\n")


def test_migrate_upgrades_a_database_of_the_first_release(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(baseline_sql())
    result = run_cli("migrate", "--database-url", empty_db_url)
    assert result.returncode == 0, result.stderr
    for migration in migrations():
        assert f"applied migration {migration.version:04d}_{migration.name}" in result.stderr
    assert installed_versions(empty_db_url) == expected_versions()


def test_migrate_twice_changes_nothing_the_second_time(empty_db_url: str) -> None:
    assert run_cli("migrate", "--database-url", empty_db_url).returncode == 0
    again = run_cli("migrate", env={"FLOWWORKER_DATABASE_URL": empty_db_url})
    assert (again.returncode, again.stderr) == (0, "schema is current\n")
    assert installed_versions(empty_db_url) == expected_versions()


def wait_for_lock_waiters(conn: psycopg.Connection, count: int, processes: list[Any]) -> None:
    """Until `count` sessions wait for the migrate lock (deadline 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
        if row is not None and row[0] >= count:
            return
        finished = [p.args for p in processes if p.poll() is not None]
        assert not finished, f"a migrate process ended while the lock was held: {finished}"
        time.sleep(0.02)  # polling a condition, not synchronising by time
    pytest.fail(f"{count} migrate processes never queued for the lock")


def race_migrates(url: str, count: int, *args: str) -> list[tuple[int, str, str]]:
    """Run `count` migrates at once: hold the migrators' advisory lock until
    all wait for it, then let them race. (exit code, stdout, stderr) each."""
    with psycopg.connect(url) as holder:
        holder.execute(MIGRATE_LOCK)
        processes = [
            subprocess.Popen(command("migrate", "--database-url", url, *args),
                             env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for _ in range(count)
        ]
        try:
            wait_for_lock_waiters(holder, count, processes)
        finally:
            holder.commit()  # releases the lock
            outcomes = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    return outcomes


def test_three_concurrent_migrates_on_an_empty_database(empty_db_url: str) -> None:
    # Each must see the others' work and exit 0.
    outcomes = race_migrates(empty_db_url, 3)
    assert [code for code, _, _ in outcomes] == [0, 0, 0], outcomes
    assert all("Traceback" not in err for _, _, err in outcomes)
    applied = [err for _, _, err in outcomes if "applied schema version" in err]
    assert len(applied) == 1, outcomes
    assert installed_versions(empty_db_url) == expected_versions()


def test_compiled_flow_applies_and_a_run_starts_from_psql(db_url: str, tmp_path: Path) -> None:
    flow_file = compile_orders(tmp_path / "flows")
    result = run_cli("migrate", "--database-url", db_url, "--dir", str(tmp_path / "flows"))
    assert result.returncode == 0, result.stderr
    assert f"applied {flow_file}" in result.stderr

    with psycopg.connect(db_url, autocommit=True) as conn:
        steps = conn.execute(
            "SELECT step_slug, step_type, deps_count FROM flowworker.steps"
            " WHERE flow_slug = 'orders' ORDER BY step_index").fetchall()
        assert steps == [("validate", "single", 0), ("charge", "single", 1),
                         ("list_items", "single", 1), ("pack_item", "map", 1),
                         ("ship", "single", 2)]
        flow = conn.execute(
            "SELECT max_attempts, base_delay, timeout FROM flowworker.flows"
            " WHERE flow_slug = 'orders'").fetchone()
        assert flow == (3, 1, 30)

    run_id, status = plain_sql(
        db_url, """select run_id, status from flowworker.start_flow('orders', '{"order_id": 1}')""")
    assert status == "started"

    with psycopg.connect(db_url, autocommit=True) as conn:
        tasks = conn.execute(
            "SELECT step_slug, task_index, status FROM flowworker.step_tasks"
            " WHERE run_id = %s", (run_id,)).fetchall()
        assert tasks == [("validate", 0, "queued")]
        messages = conn.execute("SELECT message FROM flowworker.q_orders").fetchall()
        assert messages == [({"run_id": run_id, "step_slug": "validate", "task_index": 0},)]
        run_input = conn.execute(
            "SELECT input FROM flowworker.runs WHERE run_id = %s", (run_id,)).fetchone()
        assert run_input == ({"order_id": 1},)


def test_migrate_dir_again_is_a_no_op(db_url: str, tmp_path: Path) -> None:
    compile_orders(tmp_path)
    assert run_cli("migrate", "--database-url", db_url, "--dir", str(tmp_path)).returncode == 0
    before = definitions(db_url)
    again = run_cli("migrate", "--database-url", db_url, "--dir", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert definitions(db_url) == before


CHANGED_ORDERS = """
    from flowworker import Flow

    # Same slug as examples.orders, with other options, a new step, and then
    # `charge` without its dependency on `validate`: a changed shape.
    orders = Flow("orders", max_attempts=9, base_delay=9, timeout=99)

    @orders.step()
    def validate(order, ctx):
        return order

    @orders.step(depends_on=["validate"])
    def audit(deps, ctx):
        return None

    @orders.step()
    def charge(order, ctx):
        return None
"""


def test_a_changed_flow_shape_exits_4_with_the_hint_and_applies_nothing(
        db_url: str, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    compile_orders(flows)
    assert run_cli("migrate", "--database-url", db_url, "--dir", str(flows)).returncode == 0
    before = definitions(db_url)

    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "changed_orders.py").write_text(textwrap.dedent(CHANGED_ORDERS))
    compiled = run_cli("compile", "--app", "changed_orders", "--out", str(flows),
                       env={"PYTHONPATH": str(app_dir)})
    assert compiled.returncode == 0, compiled.stderr

    result = run_cli("migrate", "--database-url", db_url, "--dir", str(flows))
    line = assert_one_error_line(result, 4)
    assert "changed shape" in line
    assert "step 'charge'" in line
    # The database's hint, and where the way through is written down.
    assert "(hint: give the changed flow a new slug, e.g. orders_v2, served by the same " \
        "worker while the runs of 'orders' drain; see docs/flows.md" in line
    assert definitions(db_url) == before  # not the options, not the new step `audit`


def test_another_sql_error_in_a_flow_file_exits_1(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "20240101000000_create_broken_flow.sql").write_text(
        "SELECT flowworker.create_flow('broken');\n"
        "SELECT flowworker.add_step('broken', 'b', deps => ARRAY['missing']::text[]);\n")
    result = run_cli("migrate", "--database-url", db_url, "--dir", str(tmp_path))
    line = assert_one_error_line(result, 1)
    assert "depends on unknown step 'missing'" in line
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM flowworker.flows WHERE flow_slug = 'broken'")
        assert row.fetchone() == (0,)
