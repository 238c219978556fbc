"""Concurrent start_tasks calls never hand one task to two claimers."""

from __future__ import annotations

import threading
import uuid

import psycopg

from tests.sql.helpers import (
    assert_invariants,
    claim,
    complete,
    deadlocks,
    define,
    in_parallel,
    run_row,
    start,
    tasks,
)

SIZE = 300


def test_each_task_is_claimed_once(conn: psycopg.Connection, db_url: str) -> None:
    define(conn, "cc", {"each": []}, maps=("each",))
    run_ids = [start(conn, "cc", list(range(SIZE // 3))) for _ in range(3)]
    got: list[tuple[uuid.UUID, int, int, uuid.UUID]] = []
    lock = threading.Lock()

    def work(c: psycopg.Connection, i: int) -> None:
        worker = uuid.UUID(int=i + 1)
        while True:
            claims = claim(c, "cc", batch_size=7, worker=worker)
            with lock:
                got.extend((x.run_id, x.task_index, x.attempt, worker) for x in claims)
            if not claims:
                row = c.execute("SELECT count(*) FROM flowworker.q_cc WHERE vt <= now()")
                if row.fetchone() == (0,):
                    return

    in_parallel(db_url, work)

    keys = [(run_id, index) for run_id, index, _, _ in got]
    assert len(keys) == SIZE
    assert len(set(keys)) == SIZE, "a task was handed to two claimers"
    assert {attempt for _, _, attempt, _ in got} == {1}
    owner = {(run_id, index): worker for run_id, index, _, worker in got}
    for run_id in run_ids:
        for t in tasks(conn, run_id):
            assert (t["status"], t["attempts_count"]) == ("started", 1)
            assert t["worker_id"] == owner[(run_id, t["task_index"])]
    assert_invariants(conn, "cc")



def test_workers_claiming_and_completing_together(conn: psycopg.Connection,
                                                  db_url: str) -> None:
    define(conn, "wk", {"a": [], "each": ["a"], "after": ["each"]}, maps=("each",))
    run_ids = [start(conn, "wk", n) for n in range(4)]
    applied = 0
    lock = threading.Lock()

    def work(c: psycopg.Connection, i: int) -> None:
        nonlocal applied
        while True:
            claims = claim(c, "wk", batch_size=5, worker=uuid.UUID(int=i + 1))
            for x in claims:
                if x.step_slug == "a":
                    output: object = [x.input] * 50
                elif x.step_slug == "each":
                    output = x.input + x.task_index
                else:
                    output = sum(x.input["each"])
                assert complete(c, x, output)
                with lock:
                    applied += 1
            if not claims:
                row = c.execute("SELECT count(*) FROM flowworker.runs WHERE status = 'started'")
                if row.fetchone() == (0,):
                    return

    in_parallel(db_url, work)

    assert applied == 4 * 52
    for n, run_id in enumerate(run_ids):
        run = run_row(conn, run_id)
        assert (run["status"], run["output"]) == ("completed", {"after": 50 * n + 1225})
    assert deadlocks(conn) == 0
    assert_invariants(conn, "wk")
