"""The operator commands as a user runs them: what they print (tables for a
person, one JSON document with --json), and how they refuse bad input:
one line on stderr and the documented exit code."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench import seed
from flowworker.devdb import free_port
from flowworker.schema import schema_version
from tests.cli.helpers import assert_one_error_line, clean_env, command, run_cli
from tests.sql.helpers import claim, complete, define, fail, start


@pytest.fixture
def url(db_url: str) -> str:
    """A database with flow `shop` (one attempt: a failure fails the run)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        define(conn, "shop", {"check": [], "charge": ["check"]}, max_attempts=1)
    return db_url


def cli(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if stdin is None:
        return run_cli(*args, env={"FLOWWORKER_DATABASE_URL": url})
    return subprocess.run(command(*args), env=clean_env({"FLOWWORKER_DATABASE_URL": url}),
                          input=stdin, capture_output=True, text=True, timeout=120, check=False)


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


# --- start ---------------------------------------------------------------------

def test_start_takes_json_from_the_option_a_file_or_stdin(url: str, tmp_path: Path) -> None:
    (tmp_path / "input.json").write_text('{"from": "file"}')
    inputs = {"option": ['--input', '{"from": "option"}'],
              "file": ["--input", f"@{tmp_path / 'input.json'}"],
              "stdin": ["--input", "-"]}
    for where, args in inputs.items():
        result = cli(url, "start", "shop", *args, "--json",
                     stdin='{"from": "stdin"}' if where == "stdin" else None)
        run = ok_json(result)
        assert set(run) == {"run_id", "flow_slug", "status", "started_at"}
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT input FROM flowworker.runs WHERE run_id = %s",
                               (run["run_id"],)).fetchone()
        assert row == ({"from": where},)


def test_start_with_a_run_id_is_idempotent(url: str) -> None:
    run_id = str(uuid.uuid4())
    first = cli(url, "start", "shop", "--run-id", run_id)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"started run {run_id} of flow shop\n"
    again = ok_json(cli(url, "start", "shop", "--run-id", run_id, "--json"))
    assert again["run_id"] == run_id


@pytest.mark.parametrize(("value", "message"), [
    ("{nope", "--input: not JSON: Expecting property name enclosed in double quotes: "
              "line 1 column 2 (char 1)"),
    ("", "--input: not JSON: Expecting value: line 1 column 1 (char 0)"),
    ("NaN", "--input: not JSON: NaN is not JSON"),
    ("[" * 100_000, "--input: not JSON this parser takes: nested too deeply"),
])
def test_start_with_an_input_that_is_not_json_exits_2(url: str, value: str,
                                                      message: str) -> None:
    line = assert_one_error_line(cli(url, "start", "shop", "--input", value), 2)
    assert line == f"flowworker: error: {message}"
    assert_no_runs(url)


def test_start_with_a_missing_input_file_exits_2(url: str, tmp_path: Path) -> None:
    line = assert_one_error_line(
        cli(url, "start", "shop", "--input", f"@{tmp_path / 'missing.json'}"), 2)
    assert line.endswith("missing.json: cannot read it: No such file or directory")


def test_start_of_an_unknown_flow_exits_1(url: str) -> None:
    line = assert_one_error_line(cli(url, "start", "nope"), 1)
    assert line == "flowworker: error: flow 'nope' does not exist"


def test_start_with_a_run_id_that_is_not_a_uuid_exits_2(url: str) -> None:
    line = assert_one_error_line(cli(url, "start", "shop", "--run-id", "run-1"), 2)
    assert line == "flowworker: error: invalid run id 'run-1': not a UUID"
    assert_no_runs(url)


def assert_no_runs(url: str) -> None:
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (0,)


# --- runs ----------------------------------------------------------------------

def failed_run(url: str) -> uuid.UUID:
    with psycopg.connect(url, autocommit=True) as conn:
        run_id = start(conn, "shop", {})
        (c,) = claim(conn, "shop")
        complete(conn, c, {})
        (c,) = claim(conn, "shop")
        fail(conn, c, "card declined\n  at charge()")
    return run_id


def test_runs_show_draws_the_steps_with_the_error(url: str) -> None:
    run_id = failed_run(url)
    result = cli(url, "runs", "show", str(run_id))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"run {run_id}  flow shop  failed"
    assert lines[2] == "error: step charge failed: attempt 1 of 1: card declined"
    assert lines[3] == "  at charge()"
    header = lines.index(next(line for line in lines if line.startswith("step ")))
    assert lines[header].split() == ["step", "state", "tasks", "attempts", "took", "last",
                                     "error"]
    assert lines[header + 1].split()[:3] == ["check", "completed", "1"]
    assert lines[header + 2].split()[:4] == ["└──", "charge", "failed", "1"]
    assert lines[header + 2].endswith("card declined")
    assert all(line == line.rstrip() for line in lines)  # piped: no padding after the end


def test_runs_show_json(url: str) -> None:
    run_id = failed_run(url)
    detail = ok_json(cli(url, "runs", "show", str(run_id), "--json"))
    assert set(detail) == {"run", "input", "output", "remaining_steps", "steps", "events"}
    assert detail["run"]["status"] == "failed"
    charge = detail["steps"][1]
    assert set(charge) == {"step_slug", "step_type", "status", "started_at", "ended_at",
                           "duration_seconds", "last_error", "tasks", "attempts", "depends_on"}
    assert (charge["step_slug"], charge["status"], charge["depends_on"]) == (
        "charge", "failed", ["check"])
    assert charge["last_error"] == "attempt 1 of 1: card declined\n  at charge()"


def test_runs_list_and_cancel(url: str) -> None:
    failed = failed_run(url)
    going = ok_json(cli(url, "start", "shop", "--json"))["run_id"]
    runs = ok_json(cli(url, "runs", "list", "--json"))["runs"]
    assert [(r["run_id"], r["status"]) for r in runs] == [(going, "started"),
                                                          (str(failed), "failed")]
    assert set(runs[0]) == {"run_id", "flow_slug", "status", "started_at", "ended_at",
                            "duration_seconds", "error_message"}
    only = ok_json(cli(url, "runs", "list", "--status", "failed", "--flow", "shop", "--json"))
    assert [r["run_id"] for r in only["runs"]] == [str(failed)]
    window = ok_json(cli(url, "runs", "list", "--since", "1h", "--until", "2030-01-01T00:00",
                         "--json"))["runs"]
    assert [r["run_id"] for r in window] == [r["run_id"] for r in runs]
    table = cli(url, "runs", "list")
    assert table.stdout.splitlines()[0].split() == ["run_id", "flow", "status", "started",
                                                    "took", "error"]
    assert f"{failed}  shop  failed" in table.stdout

    cancelled = cli(url, "runs", "cancel", going)
    assert cancelled.stdout == f"run {going} cancelled\n"
    again = cli(url, "runs", "cancel", going, "--json")
    assert ok_json(again) == {"run_id": going, "status": "cancelled", "cancelled": False}
    assert cli(url, "runs", "cancel", str(failed)).stdout == (
        f"run {failed} is failed: not cancelled\n")


@pytest.mark.parametrize("args", [["runs", "show", "nope"], ["runs", "cancel", "12345"],
                                  ["runs", "show", ""], ["runs", "retry", "x"],
                                  ["runs", "pause", "1"], ["runs", "resume", "-"],
                                  ["signal", "nope", "approve"]])
def test_a_run_id_that_is_not_a_uuid_exits_2(url: str, args: list[str]) -> None:
    line = assert_one_error_line(cli(url, *args), 2)
    assert line.endswith("not a UUID")


@pytest.mark.parametrize("subcommand", ["show", "cancel", "retry", "pause", "resume"])
def test_an_unknown_run_exits_1(url: str, subcommand: str) -> None:
    run_id = uuid.uuid4()
    line = assert_one_error_line(cli(url, "runs", subcommand, str(run_id)), 1)
    assert line == f"flowworker: error: run {run_id} does not exist"


def runs_table(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT * FROM flowworker.runs ORDER BY run_id").fetchall()


def test_runs_are_paused_resumed_and_retried(url: str) -> None:
    failed = str(failed_run(url))
    going = ok_json(cli(url, "start", "shop", "--json"))["run_id"]
    assert cli(url, "runs", "pause", going).stdout == f"run {going} paused\n"
    assert ok_json(cli(url, "runs", "list", "--status", "paused", "--json"))["runs"][0][
        "run_id"] == going
    resumed = ok_json(cli(url, "runs", "resume", going, "--json"))
    assert resumed == {"run_id": going, "status": "started", "resumed": True}
    assert cli(url, "runs", "resume", going).stdout == f"run {going} is started: not resumed\n"
    assert cli(url, "runs", "retry", failed).stdout == f"run {failed} retried (now started)\n"
    events = [e["event"] for e in ok_json(cli(url, "runs", "show", failed, "--json"))["events"]]
    assert events[-2:] == ["run.failed", "run.retried"]


@pytest.mark.parametrize(("action", "status"), [("retry", "started"), ("resume", "cancelled"),
                                                ("pause", "cancelled")])
def test_an_action_on_a_run_in_another_status_exits_1_and_changes_nothing(
        url: str, action: str, status: str) -> None:
    run_id = ok_json(cli(url, "start", "shop", "--json"))["run_id"]
    if status == "cancelled":
        cli(url, "runs", "cancel", run_id)
    before = runs_table(url)
    line = assert_one_error_line(cli(url, "runs", action, run_id), 1)
    assert status in line, line
    assert run_id in line, line
    assert runs_table(url) == before


@pytest.mark.parametrize(("args", "code", "message"), [
    (["flows", "pause", "nope"], 1, "flow 'nope' does not exist"),
    (["flows", "resume", "nope"], 1, "flow 'nope' does not exist"),
    (["signal", "RUN", "nope"], 1, "nope"),
    (["signal", "RUN", "check", "--payload", "{nope"], 2,
     "--payload: not JSON: Expecting property name"),
    (["signal", "RUN", "check"], 2, "step 'check' of flow 'shop' is a single step, not a "
                                    "wait step"),
    (["signal", str(uuid.UUID(int=7)), "check"], 1, "00000000-0000-0000-0000-000000000007"),
])
def test_steering_refuses_what_does_not_apply(url: str, args: list[str], code: int,
                                              message: str) -> None:
    """An unknown flow, run or step, a step that is not a wait step, a
    payload that is not JSON: one line, nothing changed."""
    run_id = ok_json(cli(url, "start", "shop", "--json"))["run_id"]
    args = [run_id if a == "RUN" else a for a in args]
    before = runs_table(url)
    line = assert_one_error_line(cli(url, *args), code)
    assert message in line, line
    assert runs_table(url) == before


def test_a_wait_step_is_signalled_once(url: str, tmp_path: Path) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        define(conn, "hook", {})
        conn.execute("SELECT flowworker.add_step('hook', 'approved', step_type => 'wait')")
        conn.execute("SELECT flowworker.add_step('hook', 'ship', deps => '{approved}')")
    run_id = ok_json(cli(url, "start", "hook", "--json"))["run_id"]
    (tmp_path / "ok.json").write_text('{"by": "ops"}')
    signalled = cli(url, "signal", run_id, "approved", "--payload", f"@{tmp_path / 'ok.json'}")
    assert signalled.stdout == f"step approved of run {run_id} signalled\n", signalled.stderr
    again = ok_json(cli(url, "signal", run_id, "approved", "--json"))
    assert again == {"run_id": run_id, "step_slug": "approved", "result": "already"}
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT output FROM flowworker.step_states WHERE run_id = %s AND "
                            "step_slug = 'approved'", (run_id,)).fetchone() == ({"by": "ops"},)
        (task,) = claim(conn, "hook")
    assert task.step_slug == "ship"


def test_flows_are_paused_and_resumed(url: str) -> None:
    assert cli(url, "flows", "pause", "shop").stdout == "flow shop paused\n"
    (info,) = ok_json(cli(url, "flows", "list", "--json"))["flows"]
    assert info["paused_at"] is not None
    assert "paused" in cli(url, "flows", "list").stdout.splitlines()[0]
    run_id = ok_json(cli(url, "start", "shop", "--json"))["run_id"]
    with psycopg.connect(url, autocommit=True) as conn:
        assert claim(conn, "shop") == [], "a paused flow's tasks are not claimed"
        assert cli(url, "flows", "resume", "shop").stdout == "flow shop resumed\n"
        (task,) = claim(conn, "shop")
    assert str(task.run_id) == run_id


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--flow", "nope"], 1, "flow 'nope' does not exist"),
    (["--status", "stuck"], 2, "unknown run status 'stuck'; one of started, paused, "
                               "completed, failed, cancelled"),
    (["--limit", "0"], 2, "limit must be 1..10000, not 0"),
    (["--since", "banana"], 2, "--since: 'banana' is neither a duration (2h, 7d) nor an ISO "
                               "8601 time (2026-01-31T12:00)"),
    (["--limit", "many"], 2, "Invalid value for '--limit'"),
])
def test_runs_list_refuses_what_cannot_match(url: str, args: list[str], code: int,
                                             message: str) -> None:
    line = assert_one_error_line(cli(url, "runs", "list", *args), code)
    assert message in line


@pytest.mark.parametrize("args", [["runs", "list", "--limit", "2000", "--json"],
                                  ["runs", "list", "--limit", "2000"], ["status", "--json"]])
def test_a_reader_that_stops_reading(url: str, args: list[str]) -> None:
    """`runs list --json | head -c 10`, and a reader gone before the first
    write: no traceback, nothing on stderr; exit 1 when the output was cut
    short (0 when head took it all in before it left)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT flowworker.start_flows('shop', array_fill('{}'::jsonb, "
                     "ARRAY[2000]))")
    for reader, codes in (("head -c 10", {0, 1}), ("true", {1})):
        shell = f"{' '.join(command(*args))} | {reader}; echo \" ${{PIPESTATUS[0]}}\""
        result = subprocess.run(["bash", "-c", shell],
                                env=clean_env({"FLOWWORKER_DATABASE_URL": url}),
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.stderr == "", reader
        output, _, code = result.stdout.rpartition(" ")
        assert int(code) in codes, (reader, code)
        assert len(output) == (10 if reader.startswith("head") else 0)


# --- status, flows, workers ----------------------------------------------------

def test_status_flows_and_workers(url: str) -> None:
    failed_run(url)
    cli(url, "start", "shop")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT flowworker.register_worker(%s, 'shop', 'box', 42)", (uuid.uuid4(),))
    report = ok_json(cli(url, "status", "--json"))
    assert set(report) == {"checked_at", "window_seconds", "completed_cap", "flows"}
    (flow,) = report["flows"]
    assert flow["runs"] == {"started": 1, "paused": 0, "failed": 1, "cancelled": 0}
    assert flow["queue"] == {"depth": 1, "visible": 1, "oldest_visible_seconds": flow["queue"][
        "oldest_visible_seconds"]}
    assert flow["live_workers"] == 1
    table = cli(url, "status").stdout.splitlines()
    assert table[0].split() == ["flow", "started", "paused", "failed", "cancelled", "completed",
                                "(1h)", "queued", "ready", "oldest", "ready", "workers"]
    assert table[1].split()[:5] == ["shop", "1", "0", "1", "0"]

    (info,) = ok_json(cli(url, "flows", "list", "--json"))["flows"]
    assert (info["flow_slug"], info["steps"], info["queue"]["depth"]) == ("shop", 2, 1)
    (worker,) = ok_json(cli(url, "workers", "list", "--json"))["workers"]
    assert (worker["state"], worker["hostname"], worker["pid"]) == ("live", "box", 42)
    assert "live" in cli(url, "workers", "list").stdout


def test_status_window(url: str) -> None:
    report = ok_json(cli(url, "status", "--window", "2d", "--json"))
    assert report["window_seconds"] == 172800
    line = assert_one_error_line(cli(url, "status", "--window", "soon"), 2)
    assert line.startswith("flowworker: error: --window: 'soon' is not a duration")


# --- healthcheck ---------------------------------------------------------------

def test_healthcheck(url: str, empty_db_url: str) -> None:
    healthy = cli(url, "healthcheck")
    assert (healthy.returncode, healthy.stdout) == (
        0, f"ok: database reachable, schema version {schema_version()}\n")
    assert ok_json(cli(url, "healthcheck", "--json"))["ok"] is True
    missing = cli(empty_db_url, "healthcheck", "--json")
    assert assert_one_error_line(missing, 4).endswith("run `flowworker migrate`")
    assert json.loads(missing.stdout)["exit_code"] == 4
    away = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    line = assert_one_error_line(cli(away, "healthcheck"), 3)
    assert line.startswith("flowworker: error: database unreachable")


@pytest.mark.parametrize("args", [["status"], ["runs", "list"], ["flows", "list"],
                                  ["workers", "list"], ["runs", "show", str(uuid.UUID(int=1))],
                                  ["prune", "--older-than", "7d"]])
def test_without_the_schema_every_command_exits_4(empty_db_url: str, args: list[str]) -> None:
    line = assert_one_error_line(cli(empty_db_url, *args), 4)
    assert "flowworker migrate" in line


@pytest.mark.parametrize("args", [["status"], ["runs", "list"], ["start", "shop"]])
def test_an_unreachable_database_exits_3(args: list[str]) -> None:
    away = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    assert_one_error_line(cli(away, *args), 3)


# --- prune ---------------------------------------------------------------------

def test_prune_dry_run_then_for_real(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        seed.seed(conn, old_ended=250, old_going=3, recent_ended=5)
    dry = cli(url, "prune", "--older-than", "7d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("ended more than 7d ago (before ")
    assert lines[0].endswith("): 250 runs (2 cancelled, 238 completed, 10 failed) and 0 workers")
    assert lines[1] == "dry run: nothing deleted"
    report = ok_json(cli(url, "prune", "--older-than", "7d", "--batch-size", "100", "--json"))
    assert report["found"]["runs"] == {"cancelled": 2, "completed": 238, "failed": 10}
    assert (report["deleted"], report["transactions"], report["dry_run"]) == (250, 4, False)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (8,)
        assert seed.orphans(conn) == 0
    again = cli(url, "prune", "--older-than", "7d")
    assert again.stdout.splitlines()[1].startswith("deleted 0 runs and workers in 1 transactions")


@pytest.mark.parametrize(("args", "message"), [
    (["--older-than", "banana"], "--older-than: 'banana' is not a duration: use e.g. 7d, 12h, "
                                 "1h30m, 90s or 2w"),
    (["--older-than", "0d"], "--older-than: '0d': a duration must be more than 0"),
    (["--older-than", "7d", "--batch-size", "0"], "--batch-size must be 1..100000, not 0"),
    ([], "Missing option '--older-than'"),
])
def test_prune_refuses_bad_input(url: str, args: list[str], message: str) -> None:
    line = assert_one_error_line(cli(url, "prune", *args), 2)
    assert message in line


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--prune-after", "banana"], {}, "invalid --prune-after 'banana': 'banana' is not a "
                                      "duration"),
    ([], {"FLOWWORKER_PRUNE_AFTER": "0s"}, "invalid FLOWWORKER_PRUNE_AFTER='0s': '0s': a "
                                           "duration must be more than 0"),
])
def test_run_with_a_bad_prune_after_exits_2(args: list[str], env: dict[str, str],
                                            message: str) -> None:
    result = run_cli("run", "--app", "examples.orders", *args, env=env)
    assert message in assert_one_error_line(result, 2)


def test_a_reader_reads_and_is_told_what_it_may_not_do(url: str) -> None:
    run_id = failed_run(url)
    role = f"r_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE flowworker_reader")
    try:
        reader = psycopg.conninfo.make_conninfo(url, user=role)
        for args in (["status"], ["runs", "list"], ["runs", "show", str(run_id)],
                     ["flows", "list"], ["workers", "list"], ["healthcheck"],
                     ["prune", "--older-than", "7d", "--dry-run"]):
            assert cli(reader, *args).returncode == 0, args
        line = assert_one_error_line(cli(reader, "prune", "--older-than", "7d"), 1)
        assert line == ("flowworker: error: this database role may not execute "
                        "flowworker.prune; only the schema's owner may (--dry-run only counts)")
        line = assert_one_error_line(cli(reader, "start", "shop"), 1)
        assert line.startswith("flowworker: error: permission denied for function start_flow")
        assert "starting and cancelling runs flowworker_enqueuer" in line
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")
