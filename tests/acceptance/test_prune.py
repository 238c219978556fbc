"""Retention beside real workers: `flowworker run --prune-after` prunes in
the background, and `flowworker prune` deletes history in batches while a
worker goes on with its tasks, leaving nothing behind and touching no run
that has not ended. (The million-run figures: python -m bench.prune.)"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import psycopg
import pytest

from bench import seed
from tests.acceptance.harness import Database, wait_until
from tests.cli.helpers import run_cli
from tests.support.worker_fixtures import Spawn


def kept_rows(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of the runs a prune must keep: still going, or ended recently."""
    keep = ("SELECT run_id FROM flowworker.runs WHERE flow_slug = 'aged' "
            "AND (status = 'started' OR started_at > now() - interval '1 day')")
    return {
        "runs": conn.execute(f"SELECT * FROM flowworker.runs WHERE run_id IN ({keep}) "
                             "ORDER BY run_id").fetchall(),
        "steps": conn.execute(f"SELECT * FROM flowworker.step_states WHERE run_id IN ({keep}) "
                              "ORDER BY run_id, step_slug").fetchall(),
        "tasks": conn.execute(f"SELECT * FROM flowworker.step_tasks WHERE run_id IN ({keep}) "
                              "ORDER BY run_id, step_slug, task_index").fetchall(),
        "queued": conn.execute("SELECT * FROM flowworker.q_aged ORDER BY msg_id").fetchall(),
    }


def aged_runs(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM flowworker.runs WHERE flow_slug = 'aged'").fetchone()
    assert row is not None
    return int(row[0])


def test_a_worker_prunes_in_the_background(db: Database, spawn: Spawn) -> None:
    seed.seed(db.conn, old_ended=3000, old_going=10, recent_ended=20)
    db.conn.execute("INSERT INTO flowworker.workers (worker_id, flow_slug, hostname, pid, "
                    "stopped_at) VALUES (%s, 'ping', 'gone', 1, now() - interval '8 days')",
                    (uuid.uuid4(),))
    kept = kept_rows(db.conn)
    worker = spawn("ping", args=["--prune-after", "7d"])
    done = worker.wait_for_event("prune.done", timeout=60)
    assert done["deleted"] == 3001  # the runs and the stopped worker
    assert aged_runs(db.conn) == 30
    assert kept_rows(db.conn) == kept
    assert seed.orphans(db.conn) == 0


def test_a_role_that_may_not_prune_stops_the_worker_with_exit_2(
        db: Database, spawn: Spawn, db_url: str) -> None:
    role = f"w_{uuid.uuid4().hex[:8]}"
    db.conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE flowworker_worker")
    try:
        url = psycopg.conninfo.make_conninfo(db_url, user=role)
        worker = spawn("ping", args=["--prune-after", "7d"], database_url=url, wait_ready=False)
        assert worker.wait_exit(timeout=60) == 2
        assert any("may not execute flowworker.prune" in line for line in worker.lines)
    finally:
        db.conn.execute(f"DROP OWNED BY {role}")
        db.conn.execute(f"DROP ROLE {role}")


@pytest.mark.slow
def test_prune_in_batches_while_a_worker_works(db: Database, spawn: Spawn,
                                               db_url: str) -> None:
    """20,000 runs that ended, pruned 1,000 at a time by the CLI while a
    worker serves a steady trickle of runs."""
    seed.seed(db.conn, old_ended=20_000, old_going=50, recent_ended=100)
    kept = kept_rows(db.conn)
    spawn("ping")
    stop = threading.Event()
    started: list[uuid.UUID] = []

    def trickle() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute("SELECT run_id FROM flowworker.start_flow('ping')").fetchone()
                assert row is not None
                started.append(row[0])
                stop.wait(0.02)

    feeder = threading.Thread(target=trickle)
    feeder.start()
    try:
        result = run_cli("prune", "--older-than", "7d", "--batch-size", "1000", "--json",
                         env={"FLOWWORKER_DATABASE_URL": db_url})
    finally:
        stop.set()
        feeder.join()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["deleted"], report["transactions"]) == (20_000, 21)
    assert aged_runs(db.conn) == 150
    assert kept_rows(db.conn) == kept
    assert seed.orphans(db.conn) == 0

    def all_completed() -> bool:
        row = db.conn.execute("SELECT count(*) FROM flowworker.runs WHERE flow_slug = 'ping' "
                              "AND status = 'completed'").fetchone()
        return row is not None and row[0] == len(started)

    assert started
    wait_until(all_completed, timeout=60, message="the trickle's runs to complete")
