"""Messages that point at nothing claimable are archived, never handed out."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.sql.helpers import (
    archived_ids,
    assert_invariants,
    claim,
    complete,
    define,
    queue_table,
    queued_ids,
    start,
    tasks,
)


def insert(conn: psycopg.Connection, message: object) -> int:
    row = conn.execute(
        sql.SQL("INSERT INTO {} (vt, message) VALUES (now() - interval '1 min', %s) "
                "RETURNING msg_id").format(queue_table("g")),
        (Jsonb(message),),
    ).fetchone()
    assert row is not None
    msg_id: int = row[0]
    return msg_id


def test_garbage_and_orphans_are_archived(conn: psycopg.Connection) -> None:
    define(conn, "g", {"a": [], "b": ["a"]})
    done = start(conn, "g")
    (first,) = claim(conn, "g")
    assert complete(conn, first, "out")
    (b_task,) = claim(conn, "g")
    real = start(conn, "g", {"real": True})

    garbage = [
        insert(conn, {"run_id": str(uuid.uuid4()), "step_slug": "a", "task_index": 0}),
        insert(conn, "not an object"),
        insert(conn, [1, 2, 3]),
        insert(conn, None),
        insert(conn, {"run_id": "not-a-uuid", "step_slug": "a", "task_index": "x"}),
        insert(conn, {}),
        # a duplicate for a completed task, and one for a task that is live
        insert(conn, {"run_id": str(done), "step_slug": "a", "task_index": 0}),
        insert(conn, {"run_id": str(done), "step_slug": "b", "task_index": 0}),
        insert(conn, {"run_id": str(real), "step_slug": "a", "task_index": 0}),
    ]

    claims = claim(conn, "g", batch_size=20)

    assert [(c.run_id, c.step_slug, c.input) for c in claims] == [(real, "a", {"real": True})]
    assert set(garbage) <= archived_ids(conn, "g")
    assert queued_ids(conn, "g").isdisjoint(garbage)
    assert queued_ids(conn, "g") == {b_task.msg_id, claims[0].msg_id}
    assert [t["status"] for t in tasks(conn, done)] == ["completed", "started"]
    assert complete(conn, b_task, "b out")
    assert complete(conn, claims[0], "a out")
    assert_invariants(conn, "g")



def test_garbage_fills_a_batch_and_real_tasks_still_come(conn: psycopg.Connection) -> None:
    define(conn, "g", {"a": []})
    garbage = {insert(conn, {"junk": i}) for i in range(5)}
    run_id = start(conn, "g")
    assert claim(conn, "g", batch_size=5) == []
    assert garbage <= archived_ids(conn, "g")
    (c,) = claim(conn, "g", batch_size=5)
    assert c.run_id == run_id
    assert_invariants(conn, "g")
