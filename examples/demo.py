"""`make run`: the whole job end to end on an embedded PostgreSQL.

Starts a local cluster in .flowworker/, installs the schema, compiles and
applies examples/orders.py, starts a few hundred runs, and runs a real
`flowworker run --drain` worker while printing progress. Ctrl-C drains the
worker cleanly. Set DEMO_RUNS to change how many runs start.

The data stays in .flowworker/ (`make clean` removes it): each `make run`
adds its runs to the same database. To look around afterwards:

    python -m examples.demo start   # PostgreSQL again; prints the URL and what to try
    python -m examples.demo stop
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

from examples.orders import orders
from flowworker.compiler import write_flow_file
from flowworker.devdb import LocalCluster, psql_path
from flowworker.migrator import migrate

HOME = Path(".flowworker")
DATABASE = "flowworker_demo"

PROGRESS_SQL = """
SELECT count(*) FILTER (WHERE status = 'completed'),
       count(*) FILTER (WHERE status = 'failed'),
       (SELECT count(*) FROM flowworker.step_tasks
        WHERE status = 'completed' AND run_id = ANY(%(runs)s))
FROM flowworker.runs WHERE run_id = ANY(%(runs)s)
"""

# Queries a newcomer can paste into psql to see what a run left behind.
LOOK_AROUND_SQL = (
    "select status, count(*) from flowworker.runs group by status;",
    "select step_slug, task_index, status, attempts_count, error_message\n"
    "        from flowworker.step_tasks where run_id = '{run_id}' order by 1, 2;",
    "select run_id, status, output from flowworker.runs order by started_at desc limit 5;",
)
# The same without SQL (the first two, and every read command, take --json).
LOOK_AROUND_COMMANDS = (
    "{flowworker} status",
    "{flowworker} runs list --status failed",
    "{flowworker} runs show {run_id}",
    "{flowworker} dashboard        # http://127.0.0.1:8080; Ctrl-C stops it",
)


def say(text: str = "") -> None:
    print(text, flush=True)  # noqa: T201 - this is a console demo


def cluster() -> LocalCluster:
    HOME.mkdir(exist_ok=True)
    return LocalCluster(HOME / "pg")


def prepare(local: LocalCluster) -> str:
    say(f"» PostgreSQL (embedded) on 127.0.0.1:{local.port}, data in {local.data_dir}")
    local.start()
    with psycopg.connect(local.url(), autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                             (DATABASE,)).fetchone():
            admin.execute(f"CREATE DATABASE {DATABASE}")
    url = local.url(DATABASE)
    migrate(url)
    say("» schema installed or current (flowworker migrate)")
    out = HOME / "migrations"
    path = write_flow_file(orders, out)
    say(f"» compiled examples.orders -> {path or 'unchanged file in ' + str(out)}")
    migrate(url, out)
    say("» flow 'orders' applied (flowworker migrate --dir)")
    return url


def start_runs(url: str, count: int) -> list[uuid.UUID]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT run_id FROM flowworker.start_flows('orders',"
            " array(SELECT jsonb_build_object('order_id', i) FROM generate_series(1, %s) i))",
            (count,)).fetchall()
    say(f"» started {count} runs: select * from flowworker.start_flows('orders', ...)")
    return [row[0] for row in rows]


def watch(url: str, worker: subprocess.Popen[bytes], runs: list[uuid.UUID],
          began: float) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(PROGRESS_SQL, {"runs": runs}).fetchone()
            assert row is not None
            done, failed, tasks = row
            elapsed = time.monotonic() - began
            bar = "#" * int(30 * (done + failed) / max(len(runs), 1))
            sys.stdout.write(f"\r  [{bar:<30}] runs {done + failed}/{len(runs)}  tasks {tasks}  "
                             f"{tasks / max(elapsed, 1e-9):7.0f} tasks/s")
            sys.stdout.flush()
            if worker.poll() is not None:
                sys.stdout.write("\n")
                return elapsed
            time.sleep(0.25)


def summary(url: str, runs: list[uuid.UUID], elapsed: float) -> uuid.UUID | None:
    """Print what this demo's runs came to; one completed run's id."""
    with psycopg.connect(url, autocommit=True) as conn:
        statuses: dict[str, int] = dict(conn.execute(
            "SELECT status, count(*) FROM flowworker.runs WHERE run_id = ANY(%s) GROUP BY 1",
            (runs,)).fetchall())
        tasks = conn.execute(
            "SELECT count(*) FROM flowworker.step_tasks"
            " WHERE status = 'completed' AND run_id = ANY(%s)", (runs,)).fetchone()
        sample = conn.execute("SELECT run_id, output FROM flowworker.runs WHERE status ="
                              " 'completed' AND run_id = ANY(%s) LIMIT 1", (runs,)).fetchone()
        total = conn.execute("SELECT count(*) FROM flowworker.runs").fetchone()
    done = tasks[0] if tasks else 0
    say(f"» these runs by status: {statuses} ({total[0] if total else 0} runs in the database)")
    say(f"» {done} tasks completed in {elapsed:.1f} s ({done / max(elapsed, 1e-9):.0f} tasks/s)")
    if sample:
        say(f"» e.g. run {sample[0]} output: {json.dumps(sample[1])}")
        return uuid.UUID(str(sample[0]))
    return None


def shown(path: str | Path) -> str:
    """A path as short as it can be from here (symlinks kept: .venv/bin/python)."""
    absolute = Path(os.path.abspath(path))
    return str(absolute.relative_to(Path.cwd()) if absolute.is_relative_to(Path.cwd())
               else absolute)


def flowworker_command() -> str:
    """The `flowworker` script beside this Python, else `python -m flowworker`."""
    script = Path(sys.executable).with_name("flowworker")
    return shown(script) if script.exists() else f"{shown(sys.executable)} -m flowworker"


def look_around(url: str, run_id: uuid.UUID | None) -> None:
    """How to get back in: the server, the URL, psql, and what to ask."""
    python = shown(sys.executable)
    say()
    say(f"» The data stays in {HOME}/ (the next `make run` adds to it; `make clean` removes it).")
    say("  To look around:")
    say(f"    {python} -m examples.demo start     # PostgreSQL again (it is stopped now)")
    say(f"    export FLOWWORKER_DATABASE_URL={url}")
    say(f'    {shown(psql_path())} "$FLOWWORKER_DATABASE_URL"')
    for query in LOOK_AROUND_SQL:
        say(f"      {query.format(run_id=run_id or '<run_id>')}")
    for command in LOOK_AROUND_COMMANDS:
        say(f"    {command.format(flowworker=flowworker_command(), run_id=run_id or '<run_id>')}")
    say(f"    {flowworker_command()} run --app examples.orders   # a worker; Ctrl-C stops it")
    say(f"    {python} -m examples.demo stop")


def demo() -> None:
    count = int(os.environ.get("DEMO_RUNS", "300"))
    local = cluster()
    url = prepare(local)
    runs = start_runs(url, count)
    say("» flowworker run --flow orders --app examples.orders --drain (Ctrl-C drains)")
    worker = subprocess.Popen(
        [sys.executable, "-m", "flowworker", "run", "--flow", "orders",
         "--app", "examples.orders", "--drain", "--metrics-addr", "off",
         "--log-format", "human"],
        env={**os.environ, "FLOWWORKER_DATABASE_URL": url, "FLOWWORKER_LOG_LEVEL": "WARNING"})
    began = time.monotonic()
    try:
        elapsed = watch(url, worker, runs, began)
    except KeyboardInterrupt:
        say("\n» Ctrl-C: the worker drains (a second Ctrl-C skips the wait)")
        worker.wait()
        elapsed = time.monotonic() - began
    run_id = summary(url, runs, elapsed)
    local.stop()
    say(f"» worker exited with {worker.returncode}; PostgreSQL stopped")
    look_around(url, run_id)
    if worker.returncode:
        raise SystemExit(worker.returncode)


def start() -> None:
    """Start the demo's PostgreSQL (after a `make run`) and say how to reach it."""
    local = cluster()
    if not (local.data_dir / "PG_VERSION").exists():
        raise SystemExit("no demo database yet: run `make run` first")
    local.start()
    url = local.url(DATABASE)
    say(f"» PostgreSQL (embedded) on 127.0.0.1:{local.port}, data in {local.data_dir}")
    say(f"    export FLOWWORKER_DATABASE_URL={url}")
    say(f'    {shown(psql_path())} "$FLOWWORKER_DATABASE_URL"')
    say(f"  `{shown(sys.executable)} -m examples.demo stop` stops it.")


def stop() -> None:
    cluster().stop()
    say("» PostgreSQL stopped")


def main(argv: list[str]) -> None:
    commands = {"start": start, "stop": stop}
    if argv and argv[0] not in commands:
        raise SystemExit(f"usage: python -m examples.demo [{'|'.join(commands)}]")
    (commands[argv[0]] if argv else demo)()


if __name__ == "__main__":
    main(sys.argv[1:])
