"""`python -m bench.run_ids [--runs N] [--pairs P]`: the database's side of a
drain of one-task runs, with random run ids (version 4, as before schema
version 8) and time-ordered ones (version 7, flowworker._new_run_ids), for
docs/performance.md ("Run ids").

No worker and no Python in the loop but one psycopg connection: N runs
started 1,000 per start_flows call, VACUUM ANALYZE, CHECKPOINT, then
start_tasks and ack_tasks by 100 until the queue is empty. The two kinds
alternate, each in a fresh database of one throwaway cluster with the
benchmark's settings (fsync on). Reported per drain: tasks/s, WAL bytes and
full-page images per task.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from bench.pg import ANCHOR_SETTINGS
from flowworker.devdb import LocalCluster
from flowworker.migrator import migrate

WORKER = uuid.uuid4()
# The ids start_flows is given: random ones, or none, so it makes its own.
KINDS = {"random": "ARRAY(SELECT gen_random_uuid() FROM generate_series(1, 1000))",
         "time-ordered": "NULL"}


def drain(cluster: LocalCluster, dbname: str, ids: str, runs: int) -> tuple[float, float, float]:
    """tasks/s, WAL bytes per task, full-page images per task."""
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {dbname}")
        admin.execute(f"CREATE DATABASE {dbname}")
    url = cluster.url(dbname)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT flowworker.create_flow('ids')")
        conn.execute("SELECT flowworker.add_step('ids', 'a')")
        for _ in range(runs // 1000):
            conn.execute(f"SELECT count(*) FROM flowworker.start_flows('ids', "
                         f"array_fill('{{}}'::jsonb, ARRAY[1000]), {ids})")
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
        conn.execute("SELECT pg_stat_reset_shared('wal')")
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        started, done = time.perf_counter(), 0
        while rows := conn.execute(
                "SELECT run_id, step_slug, task_index, attempt "
                "FROM flowworker.start_tasks('ids', %s, 100, 30)", (WORKER,)).fetchall():
            conn.execute("SELECT count(*) FROM flowworker.ack_tasks(%s, %s, %s, %s, %s, %s, %s)",
                         ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                          [r[3] for r in rows], [Jsonb(1)] * len(rows), [None] * len(rows),
                          [WORKER] * len(rows)))
            done += len(rows)
        seconds = time.perf_counter() - started
        wal = conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", lsn).fetchone()
        fpi = conn.execute("SELECT wal_fpi FROM pg_stat_wal").fetchone()
        left = conn.execute("SELECT count(*) FROM flowworker.runs "
                            "WHERE status <> 'completed'").fetchone()
    assert done == runs, (done, runs)
    assert left == (0,), left
    assert wal is not None
    assert fpi is not None
    return done / seconds, float(wal[0]) / done, float(fpi[0]) / done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run_ids", description=__doc__)
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="flowworker-run-ids-"))
    cluster = LocalCluster(home / "pg", settings=ANCHOR_SETTINGS)
    cluster.init()
    cluster.start()
    try:
        print(f"{args.runs:,} one-task runs per drain")  # noqa: T201
        for pair in range(args.pairs):
            for kind, ids in KINDS.items():
                rate, wal, fpi = drain(cluster, "run_ids", ids, args.runs)
                print(f"  pair {pair + 1}  {kind:12}  {rate:8,.0f} tasks/s  "  # noqa: T201
                      f"WAL {wal:6,.0f} B/task  FPI {fpi:.2f}/task", flush=True)
    finally:
        cluster.stop("fast")
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
