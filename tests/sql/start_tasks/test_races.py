"""Forced races: a late completion against redelivery, completions against cancel."""

from __future__ import annotations

import threading
import uuid

import psycopg

from tests.sql.helpers import (
    THREADS,
    Claim,
    assert_invariants,
    claim,
    complete,
    deadlocks,
    define,
    expire,
    in_parallel,
    run_row,
    start,
    tasks,
)

SIZE = 200


def test_late_completion_against_redelivery(conn: psycopg.Connection, db_url: str) -> None:
    define(conn, "rd", {"each": []}, maps=("each",))
    run_id = start(conn, "rd", list(range(SIZE)))
    old = claim(conn, "rd", batch_size=SIZE)
    expire(conn, "rd", [c.msg_id for c in old])
    applied: dict[int, bool] = {}
    reclaimed: list[Claim] = []
    lock = threading.Lock()

    def work(c: psycopg.Connection, i: int) -> None:
        if i % 2:  # zombies finishing their expired claims
            for task in old[i // 2::THREADS // 2]:
                applied[task.task_index] = complete(c, task, "zombie")
            return
        while True:  # workers redelivering the expired claims
            got = claim(c, "rd", batch_size=3, worker=uuid.uuid4())
            with lock:
                reclaimed.extend(got)
            if not got and c.execute("SELECT count(*) FROM flowworker.q_rd "
                                     "WHERE vt <= now()").fetchone() == (0,):
                return

    in_parallel(db_url, work)

    assert len(applied) == SIZE
    again = {c.task_index for c in reclaimed}
    assert len(again) == len(reclaimed), "a task was redelivered twice"
    assert {c.attempt for c in reclaimed} <= {2}
    zombie_won = {i for i, ok in applied.items() if ok}
    assert zombie_won.isdisjoint(again), "a completed task was redelivered"
    assert zombie_won | again == set(range(SIZE)), "a task was neither completed nor redelivered"
    for c in reclaimed:
        assert complete(conn, c, "fresh")
    output = run_row(conn, run_id)["output"]["each"]
    assert output == ["zombie" if i in zombie_won else "fresh" for i in range(SIZE)]
    assert deadlocks(conn) == 0
    assert_invariants(conn, "rd")


def test_completions_against_cancel(conn: psycopg.Connection, db_url: str) -> None:
    define(conn, "cr", {"each": [], "after": ["each"]}, maps=("each",))
    runs = [start(conn, "cr", list(range(SIZE // 4))) for _ in range(4)]
    claims = claim(conn, "cr", batch_size=SIZE)
    victim = runs[1]
    applied: list[Claim] = []

    def work(c: psycopg.Connection, i: int) -> None:
        if i == 0:
            c.execute("SELECT flowworker.cancel_run(%s)", (victim,))
            return
        for task in claims[i::THREADS]:
            if complete(c, task, task.task_index):
                applied.append(task)

    in_parallel(db_url, work)

    assert run_row(conn, victim)["status"] == "cancelled"
    victim_tasks = tasks(conn, victim)
    completed = {t["task_index"] for t in victim_tasks if t["status"] == "completed"}
    assert completed == {c.task_index for c in applied if c.run_id == victim}
    assert {t["status"] for t in victim_tasks} <= {"completed", "cancelled"}
    others = [c for n, c in enumerate(claims) if n % THREADS and c.run_id != victim]
    assert sorted(c.msg_id for c in applied if c.run_id != victim) == sorted(
        c.msg_id for c in others), "completions of the other runs must all apply"
    assert deadlocks(conn) == 0
    assert_invariants(conn, "cr")
