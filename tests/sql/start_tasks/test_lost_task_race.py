"""Two claimers that each find a lost task of the other's run must not deadlock.

Claimer A holds a task of run 2 and fails run 1; claimer B holds a task of
run 1 and fails run 2. A third connection holds one more task of run 1, so
that A is caught in the middle of cancelling run 1 while B starts.
"""

from __future__ import annotations

import threading
import uuid

import psycopg

from tests.acceptance.harness import wait_until
from tests.sql.helpers import (
    Claim,
    assert_invariants,
    blocked_or_done,
    claim,
    define,
    queued_ids,
    run_row,
    start,
    tasks,
)


def test_crossed_lost_tasks_do_not_deadlock(conn: psycopg.Connection, db_url: str) -> None:
    define(conn, "dl", {"each": []}, maps=("each",), max_attempts=1)
    r1 = start(conn, "dl", [0, 1, 2])
    r2 = start(conn, "dl", [0, 1])
    msg = {(t["run_id"], t["task_index"]): t["message_id"]
           for r in (r1, r2) for t in tasks(conn, r)}
    # Task 0 of each run is claimed, and lost on its only attempt.
    conn.execute("UPDATE flowworker.q_dl SET vt = now() + interval '1 h' "
                 "WHERE msg_id <> ALL(%s)", ([msg[(r1, 0)], msg[(r2, 0)]],))
    assert {(c.run_id, c.task_index) for c in claim(conn, "dl")} == {(r1, 0), (r2, 0)}
    # Claim order: A gets (r1,0) (r2,1); B gets (r2,0) (r1,2); (r1,1) stays hidden.
    order = [(r1, 0), (r2, 1), (r2, 0), (r1, 2)]
    for hours, key in enumerate(reversed(order), start=1):
        conn.execute("UPDATE flowworker.q_dl SET vt = now() - make_interval(hours => %s) "
                     "WHERE msg_id = %s", (hours, msg[key]))
    conn.execute("UPDATE flowworker.q_dl SET vt = now() + interval '1 h' WHERE msg_id = %s",
                 (msg[(r1, 1)],))

    results: dict[str, list[Claim] | BaseException] = {}

    def claimer(name: str, c: psycopg.Connection) -> threading.Thread:
        def body() -> None:
            try:
                results[name] = claim(c, "dl", batch_size=2, worker=uuid.uuid4())
            except BaseException as exc:
                results[name] = exc
        thread = threading.Thread(target=body)
        thread.start()
        return thread

    with psycopg.connect(db_url) as holder, \
            psycopg.connect(db_url, autocommit=True) as a, \
            psycopg.connect(db_url, autocommit=True) as b:
        holder.execute("SELECT 1 FROM flowworker.step_tasks WHERE run_id = %s "
                       "AND task_index = 1 FOR UPDATE", (r1,))
        ta = claimer("a", a)
        wait_until(lambda: blocked_or_done(conn, a.info.backend_pid, ta),
                   timeout=10, interval=0.01, message="A waits or ends")
        tb = claimer("b", b)
        wait_until(lambda: blocked_or_done(conn, b.info.backend_pid, tb),
                   timeout=10, interval=0.01, message="B waits or ends")
        holder.rollback()
        ta.join(timeout=30)
        tb.join(timeout=30)
    assert not ta.is_alive()
    assert not tb.is_alive()
    errors = [r for r in results.values() if isinstance(r, BaseException)]
    assert errors == []

    # Whatever was left visible is finished by later claims.
    conn.execute("UPDATE flowworker.q_dl SET vt = now() - interval '1 h'")
    for _ in range(5):
        claim(conn, "dl")
    assert run_row(conn, r1)["status"] == "failed"
    assert run_row(conn, r2)["status"] == "failed"
    statuses = {t["status"] for r in (r1, r2) for t in tasks(conn, r)}
    assert statuses <= {"failed", "cancelled"}
    assert queued_ids(conn, "dl") == set()
    assert_invariants(conn, "dl")
