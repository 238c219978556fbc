"""B2 / S4 (SQL side): messages put straight into q_<flow> that do not point
at an unfinished task of that flow, by the very message id the task was
given, are archived by start_tasks, never handed out, and never come back;
the real tasks behind them are still claimed, with no attempt spent.
(tests/sql/start_tasks/test_garbage.py covers unknown runs, non-objects,
malformed pointers and duplicates of completed and live tasks.)"""

from __future__ import annotations

import uuid
from typing import Any

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
    run_row,
    start,
    tasks,
)


def inject(conn: psycopg.Connection, flow: str, message: Any, delay: str = "-1 min") -> int:
    row = conn.execute(
        sql.SQL("INSERT INTO {} (vt, message) VALUES (now() + %s::interval, %s) "
                "RETURNING msg_id").format(queue_table(flow)),
        (delay, Jsonb(message)),
    ).fetchone()
    assert row is not None
    msg_id: int = row[0]
    return msg_id


def pointer(run_id: uuid.UUID, step: str, index: Any = 0, **extra: Any) -> dict[str, Any]:
    return {"run_id": str(run_id), "step_slug": step, "task_index": index, **extra}


def test_foreign_messages_are_archived_and_real_tasks_still_come(
        conn: psycopg.Connection) -> None:
    define(conn, "g", {"a": [], "b": ["a"]})
    define(conn, "h", {"a": []})
    live = start(conn, "g", {"live": True})
    other_flow = start(conn, "h")
    cancelled = start(conn, "g", {"cancelled": True})
    conn.execute("SELECT flowworker.cancel_run(%s)", (cancelled,))
    real_messages = queued_ids(conn, "g")

    foreign = {
        "names os.system": inject(conn, "g", pointer(live, "os.system")),
        "names a module path": inject(conn, "g", pointer(live, "os.path.join", 0,
                                                          module="os", callable="system")),
        "names a step that does not exist": inject(conn, "g", pointer(live, "nope")),
        "names a step of the run not started yet": inject(conn, "g", pointer(live, "b")),
        "index out of range": inject(conn, "g", pointer(live, "a", 7)),
        "negative index": inject(conn, "g", pointer(live, "a", -1)),
        "index as a string": inject(conn, "g", pointer(live, "a", "0")),
        "index as a float": inject(conn, "g", pointer(live, "a", 0.0)),
        "task of another flow": inject(conn, "g", pointer(other_flow, "a")),
        "task of a cancelled run": inject(conn, "g", pointer(cancelled, "a")),
        "number": inject(conn, "g", 42),
        "boolean": inject(conn, "g", True),
        "deeply nested": inject(conn, "g", {"run_id": {"run_id": {"run_id": [str(live)]}}}),
        "pointer in an array": inject(conn, "g", [pointer(live, "a")]),
    }
    later = inject(conn, "g", pointer(live, "os.system"), delay="1 hour")

    claims = claim(conn, "g", batch_size=50)

    assert [(c.run_id, c.step_slug, c.task_index, c.attempt) for c in claims] == [
        (live, "a", 0, 1)]
    assert claims[0].msg_id in real_messages
    archived = archived_ids(conn, "g")
    kept = {what for what, msg_id in foreign.items() if msg_id not in archived}
    assert kept == set(), f"not archived: {kept}"
    assert queued_ids(conn, "g").isdisjoint(foreign.values())
    # A message that is not visible yet is left alone until it is.
    assert later in queued_ids(conn, "g")
    # Nothing comes back, and nothing else was touched.
    assert claim(conn, "g", batch_size=50) == []
    assert [t["status"] for t in tasks(conn, other_flow)] == ["queued"]
    assert queued_ids(conn, "h") == {tasks(conn, other_flow)[0]["message_id"]}
    assert complete(conn, claims[0], "a out")
    (b,) = claim(conn, "g")
    assert complete(conn, b, "b out")
    assert run_row(conn, live)["status"] == "completed"
    conn.execute(sql.SQL("UPDATE {} SET vt = now() WHERE msg_id = %s").format(
        queue_table("g")), (later,))
    assert claim(conn, "g") == []
    assert later in archived_ids(conn, "g")
    assert_invariants(conn, "g")
    assert_invariants(conn, "h")


def test_a_flood_of_foreign_messages_does_not_starve_real_tasks(
        conn: psycopg.Connection) -> None:
    """Garbage ahead of the real work in queue order: each claim clears a
    batch of it, and the real tasks come out after a bounded number of calls."""
    define(conn, "g", {"a": []})
    fake_run = uuid.uuid4()
    conn.execute(
        sql.SQL("INSERT INTO {} (vt, message) SELECT now() - interval '1 min', "
                "jsonb_build_object('run_id', %s::text, 'step_slug', 'os.system', "
                "'task_index', i) FROM generate_series(1, 1000) AS i").format(queue_table("g")),
        (str(fake_run),))
    runs = {start(conn, "g", {"i": i}) for i in range(5)}
    got: list[uuid.UUID] = []
    calls = 0
    while len(got) < len(runs):
        calls += 1
        assert calls <= 1000 // 100 + 2, "real tasks were starved by garbage"
        got += [c.run_id for c in claim(conn, "g", batch_size=100)]
    assert sorted(map(str, got)) == sorted(map(str, runs))
    assert len(archived_ids(conn, "g")) == 1000
    assert {t["attempts_count"] for r in runs for t in tasks(conn, r)} == {1}
