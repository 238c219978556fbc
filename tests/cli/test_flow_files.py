"""`flowworker migrate --dir`: each compiled flow file is applied once, in
name order, in one transaction with its row in flowworker.flow_files."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import psycopg

from tests.cli.helpers import (
    SHOP,
    assert_one_error_line,
    clean_env,
    psql_path,
    run_cli,
    user_app,
)
from tests.cli.test_migrate import race_migrates
from tests.sql.schema.test_schema import baseline_sql


def compile_shop(tmp_path: Path, flows: Path, timeout: int) -> Path:
    """Compile flow `shop` with this timeout into flows; the file written."""
    env = user_app(tmp_path / "app", "shop_app", SHOP.format(timeout=timeout))
    result = run_cli("compile", "--app", "shop_app", "--out", str(flows), env=env)
    assert result.returncode == 0, result.stderr
    written = result.stderr.splitlines()[-1]
    assert written.startswith("wrote "), result.stderr
    return Path(written.removeprefix("wrote "))


def migrate_dir(db_url: str, flows: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("migrate", "--database-url", db_url, "--dir", str(flows))


def ledger(db_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT file_name, checksum FROM flowworker.flow_files ORDER BY 1")
        return [(str(name), str(checksum)) for name, checksum in rows]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def query(db_url: str, sql: str) -> tuple[object, ...] | None:
    """The first row of sql, None when it returns none (or no rows)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        cursor = conn.execute(sql.encode())
        return cursor.fetchone() if cursor.description else None


def test_each_file_is_applied_once_and_recorded_with_its_checksum(
        db_url: str, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    first = compile_shop(tmp_path, flows, timeout=20)
    result = migrate_dir(db_url, flows)
    assert (result.returncode, result.stderr) == (0, f"applied {first}\nschema is current\n")
    assert ledger(db_url) == [(first.name, sha256(first))]

    # An operator's change stays: a file applied again would set 20 back.
    query(db_url, "UPDATE flowworker.flows SET timeout = 99 WHERE flow_slug = 'shop'")
    again = migrate_dir(db_url, flows)
    assert again.returncode == 0, again.stderr
    skipped, current = again.stderr.splitlines()
    when = r"\(applied \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)"
    assert re.fullmatch(rf"skipped {re.escape(str(first))} {when}", skipped), again.stderr
    assert current == "schema is current"
    assert query(db_url, "SELECT timeout FROM flowworker.flows") == (99,)
    assert ledger(db_url) == [(first.name, sha256(first))]


def test_options_changed_in_two_files_end_with_the_newest_and_stay(
        db_url: str, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    older = compile_shop(tmp_path, flows, timeout=20)
    assert migrate_dir(db_url, flows).returncode == 0
    newer = compile_shop(tmp_path, flows, timeout=25)
    assert older.name < newer.name
    result = migrate_dir(db_url, flows)
    assert result.returncode == 0, result.stderr
    assert f"skipped {older} " in result.stderr
    assert f"applied {newer}\n" in result.stderr
    row = "SELECT timeout, xmin::text FROM flowworker.flows WHERE flow_slug = 'shop'"
    timeout, version = query(db_url, row) or ()
    assert timeout == 25

    # No flip-flop: the older file does not set 20 again before the newer
    # sets 25 (the row would get a new version), nor wins once the newer
    # file is gone.
    assert migrate_dir(db_url, flows).returncode == 0
    assert query(db_url, row) == (25, version)
    newer.unlink()
    assert migrate_dir(db_url, flows).returncode == 0
    assert query(db_url, row) == (25, version)


def test_an_edited_applied_file_is_refused_and_nothing_is_applied(
        db_url: str, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    first = compile_shop(tmp_path, flows, timeout=20)
    assert migrate_dir(db_url, flows).returncode == 0
    compile_shop(tmp_path, flows, timeout=25)  # a newer file, not applied yet
    first.write_text(first.read_text().replace("timeout => 20", "timeout => 21"))

    line = assert_one_error_line(migrate_dir(db_url, flows), 4)
    assert f"{first} was edited after it was applied (2" in line
    assert f"git checkout -- {first}) and run `flowworker compile --out {flows}`" in line
    assert f"Nothing from {flows} was applied" in line
    assert query(db_url, "SELECT timeout FROM flowworker.flows") == (20,)
    assert [name for name, _ in ledger(db_url)] == [first.name]


BROKEN = """\
BEGIN;
SELECT flowworker.create_flow('broken');
SELECT flowworker.add_step('broken', 'b', deps => ARRAY['missing']::text[]);
COMMIT;
"""


def test_a_failing_file_records_nothing_and_stops_there(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "1_a.sql").write_text("SELECT flowworker.create_flow('a');\n")
    (tmp_path / "2_broken.sql").write_text(BROKEN)
    (tmp_path / "3_c.sql").write_text("SELECT flowworker.create_flow('c');\n")
    line = assert_one_error_line(migrate_dir(db_url, tmp_path), 1)
    assert "2_broken.sql: step broken.b depends on unknown step 'missing'" in line
    assert [name for name, _ in ledger(db_url)] == ["1_a.sql"]
    flows = "SELECT array_agg(flow_slug ORDER BY flow_slug)::text FROM flowworker.flows"
    assert query(db_url, flows) == ("{a}",)

    # Never applied, so it may still be fixed in place.
    (tmp_path / "2_broken.sql").write_text(BROKEN.replace("ARRAY['missing']", "ARRAY[]"))
    result = migrate_dir(db_url, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[1:] == [
        f"applied {tmp_path / '2_broken.sql'}", f"applied {tmp_path / '3_c.sql'}",
        "schema is current"]
    assert query(db_url, flows) == ("{a,broken,c}",)


def test_hints_of_other_errors_are_printed(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "1_bad.sql").write_text("SELECT flowworker.create_flow('Bad');\n")
    line = assert_one_error_line(migrate_dir(db_url, tmp_path), 1)
    assert line.endswith("1_bad.sql: invalid flow slug: 'Bad' (hint: slugs match "
                         "^[a-z][a-z0-9_]{0,47}$)"), line


def test_a_compiled_file_applies_with_psql_and_then_with_migrate(
        db_url: str, tmp_path: Path) -> None:
    """Users of psql, Flyway or sqitch apply the compiled files themselves."""
    flows = tmp_path / "flows"
    file = compile_shop(tmp_path, flows, timeout=20)
    psql = subprocess.run(
        [psql_path(), db_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(file)],
        capture_output=True, text=True, timeout=60, check=False, env=clean_env())
    assert (psql.returncode, psql.stderr) == (0, "")
    steps = "SELECT array_agg(step_slug ORDER BY step_index)::text FROM flowworker.steps"
    assert query(db_url, steps) == ("{pick,pack}",)
    assert ledger(db_url) == []

    # migrate does not know psql applied it: it applies it again (a no-op)
    # and records it, inside the transaction its own BEGIN and COMMIT join.
    result = migrate_dir(db_url, flows)
    assert (result.returncode, result.stderr) == (0, f"applied {file}\nschema is current\n")
    assert ledger(db_url) == [(file.name, sha256(file))]
    assert query(db_url, steps) == ("{pick,pack}",)


def test_concurrent_migrates_apply_each_file_once(db_url: str, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    file = compile_shop(tmp_path, flows, timeout=20)
    outcomes = race_migrates(db_url, 2, "--dir", str(flows))
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    said = sorted(err.splitlines()[0].split(" ")[0] for _, _, err in outcomes)
    assert said == ["applied", "skipped"], outcomes
    assert ledger(db_url) == [(file.name, sha256(file))]


def test_an_unreadable_file_is_one_line_and_exit_2(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "1_latin1.sql").write_bytes("SELECT 'café';\n".encode("latin-1"))
    line = assert_one_error_line(migrate_dir(db_url, tmp_path), 2)
    assert "1_latin1.sql: cannot read it as UTF-8 text" in line
    assert ledger(db_url) == []


def test_an_upgrade_applies_the_files_once_more_and_records_them(
        empty_db_url: str, tmp_path: Path) -> None:
    """Before version 4 nothing recorded the files: the first migrate after
    the upgrade applies them all, in name order, and from then on once."""
    flows = tmp_path / "flows"
    older = compile_shop(tmp_path, flows, timeout=20)
    newer = compile_shop(tmp_path, flows, timeout=25)
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(baseline_sql())
    result = migrate_dir(empty_db_url, flows)
    assert result.returncode == 0, result.stderr
    assert "applied migration 0004_flow_files\n" in result.stderr
    assert result.stderr.splitlines()[-3:] == [
        f"applied {older}", f"applied {newer}", "schema is current"]
    assert ledger(empty_db_url) == sorted([(older.name, sha256(older)),
                                          (newer.name, sha256(newer))])
    assert query(empty_db_url, "SELECT timeout FROM flowworker.flows") == (25,)
