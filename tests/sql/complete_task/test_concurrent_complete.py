"""Sibling map tasks completed from many connections at once."""

from __future__ import annotations

import psycopg

from tests.sql.helpers import (
    THREADS,
    Claim,
    assert_invariants,
    claim,
    complete,
    deadlocks,
    define,
    fail,
    in_parallel,
    run_row,
    start,
    step_row,
    tasks,
)

SIZE = 200


def test_concurrent_completions_count_exactly(conn: psycopg.Connection, db_url: str) -> None:
    define(conn, "par", {"each": [], "after": ["each"]}, maps=("each",))
    run_id = start(conn, "par", list(range(SIZE)))
    claims = claim(conn, "par", batch_size=SIZE)
    assert len(claims) == SIZE
    applied: list[bool] = []

    def work(c: psycopg.Connection, i: int) -> None:
        mine = claims[i::THREADS]
        for task in mine if i % 2 else reversed(mine):
            applied.append(complete(c, task, {"sq": task.input * task.input}))

    in_parallel(db_url, work)

    assert applied == [True] * SIZE
    step = step_row(conn, run_id, "each")
    assert (step["status"], step["remaining_tasks"]) == ("completed", 0)
    assert step["output"] == [{"sq": i * i} for i in range(SIZE)]
    assert [t["step_slug"] for t in tasks(conn, run_id)].count("after") == 1
    (after,) = claim(conn, "par")
    assert complete(conn, after, "end")
    assert run_row(conn, run_id)["status"] == "completed"
    assert deadlocks(conn) == 0
    assert_invariants(conn, "par")



def test_complete_and_fail_race_on_siblings(conn: psycopg.Connection, db_url: str) -> None:
    define(conn, "race", {"each": []}, maps=("each",), max_attempts=2, base_delay=0)
    run_id = start(conn, "race", list(range(SIZE)))
    claims = claim(conn, "race", batch_size=SIZE)
    outcomes: list[str] = []

    def work(c: psycopg.Connection, i: int) -> None:
        for task in claims[i::THREADS]:
            if task.task_index % 10 == 0:
                outcomes.append(fail(c, task, "flaky"))
            else:
                outcomes.append("done" if complete(c, task, task.task_index) else "stale")

    in_parallel(db_url, work)

    assert sorted(set(outcomes)) == ["done", "retry"]
    assert outcomes.count("retry") == SIZE // 10
    assert step_row(conn, run_id, "each")["remaining_tasks"] == SIZE // 10
    retried: list[Claim] = claim(conn, "race", batch_size=SIZE)
    assert sorted(c.task_index for c in retried) == list(range(0, SIZE, 10))
    assert {c.attempt for c in retried} == {2}
    for c in retried:
        assert complete(conn, c, c.task_index)
    assert run_row(conn, run_id)["output"] == {"each": list(range(SIZE))}
    assert deadlocks(conn) == 0
    assert_invariants(conn, "race")
