"""`make run`: the whole job end to end on an embedded PostgreSQL.

Starts a local cluster in .flowworker/, installs the schema, compiles and
applies examples/orders.py, starts a few hundred runs, and runs a real
`flowworker run --drain` worker while printing progress. Ctrl-C drains the
worker cleanly. Set DEMO_RUNS to change how many runs start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from examples.orders import orders
from flowworker.compiler import write_flow_file
from flowworker.devdb import LocalCluster
from flowworker.migrator import migrate

HOME = Path(".flowworker")
DATABASE = "flowworker_demo"

PROGRESS_SQL = """
SELECT count(*) FILTER (WHERE status = 'completed'),
       count(*) FILTER (WHERE status = 'failed'),
       count(*),
       (SELECT count(*) FROM flowworker.step_tasks WHERE status = 'completed')
FROM flowworker.runs
"""


def say(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - this is a console demo


def prepare(cluster: LocalCluster) -> str:
    say(f"» PostgreSQL (embedded) on 127.0.0.1:{cluster.port}, data in {cluster.data_dir}")
    cluster.start()
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    url = cluster.url(DATABASE)
    migrate(url)
    say("» schema installed (flowworker migrate)")
    out = HOME / "migrations"
    path = write_flow_file(orders, out)
    say(f"» compiled examples.orders -> {path or 'unchanged file in ' + str(out)}")
    migrate(url, out)
    say("» flow 'orders' applied (flowworker migrate --dir)")
    return url


def start_runs(url: str, count: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "SELECT flowworker.start_flow('orders', jsonb_build_object('order_id', i))"
            " FROM generate_series(1, %s) AS i", (count,))
    say(f"» started {count} runs: select * from flowworker.start_flow('orders', ...)")


def watch(url: str, worker: subprocess.Popen[bytes], total: int, began: float) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(PROGRESS_SQL).fetchone()
            assert row is not None
            done, failed, _runs, tasks = row
            elapsed = time.monotonic() - began
            bar = "#" * int(30 * (done + failed) / max(total, 1))
            sys.stdout.write(f"\r  [{bar:<30}] runs {done + failed}/{total}  tasks {tasks}  "
                             f"{tasks / max(elapsed, 1e-9):7.0f} tasks/s")
            sys.stdout.flush()
            if worker.poll() is not None:
                sys.stdout.write("\n")
                return elapsed
            time.sleep(0.25)


def summary(url: str, elapsed: float) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        statuses: dict[str, int] = dict(conn.execute(
            "SELECT status, count(*) FROM flowworker.runs GROUP BY 1").fetchall())
        tasks = conn.execute(
            "SELECT count(*) FROM flowworker.step_tasks WHERE status = 'completed'").fetchone()
        sample = conn.execute("SELECT run_id, output FROM flowworker.runs "
                              "WHERE status = 'completed' LIMIT 1").fetchone()
    done = tasks[0] if tasks else 0
    say(f"» runs by status: {statuses}")
    say(f"» {done} tasks completed in {elapsed:.1f} s ({done / max(elapsed, 1e-9):.0f} tasks/s)")
    if sample:
        say(f"» e.g. run {sample[0]} output: {json.dumps(sample[1])}")


def main() -> None:
    count = int(os.environ.get("DEMO_RUNS", "300"))
    HOME.mkdir(exist_ok=True)
    cluster = LocalCluster(HOME / "pg")
    url = prepare(cluster)
    start_runs(url, count)
    say("» flowworker run --flow orders --app examples.orders --drain (Ctrl-C drains)")
    worker = subprocess.Popen(
        [sys.executable, "-m", "flowworker", "run", "--flow", "orders",
         "--app", "examples.orders", "--drain", "--metrics-addr", "off",
         "--log-format", "human"],
        env={**os.environ, "FLOWWORKER_DATABASE_URL": url, "FLOWWORKER_LOG_LEVEL": "WARNING"})
    began = time.monotonic()
    try:
        elapsed = watch(url, worker, count, began)
    except KeyboardInterrupt:
        say("\n» Ctrl-C: the worker drains (a second Ctrl-C skips the wait)")
        worker.wait()
        elapsed = time.monotonic() - began
    summary(url, elapsed)
    cluster.stop()
    say(f"» worker exited with {worker.returncode}; PostgreSQL stopped "
        f"(data kept in {cluster.data_dir}; `make clean` removes it)")
    if worker.returncode:
        raise SystemExit(worker.returncode)


if __name__ == "__main__":
    main()
