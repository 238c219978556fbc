"""release_tasks hands current claims back at once, without spending an attempt."""

from __future__ import annotations

from dataclasses import replace

import psycopg

from tests.sql.helpers import (
    assert_invariants,
    claim,
    complete,
    define,
    expire,
    fail,
    release,
    start,
    tasks,
    visible_in,
    vt_of,
)


def test_release_makes_task_visible_without_spending_an_attempt(
        conn: psycopg.Connection) -> None:
    define(conn, "rel", {"each": []}, maps=("each",))
    run_id = start(conn, "rel", [1, 2, 3])
    c0, c1, c2 = claim(conn, "rel")
    assert claim(conn, "rel") == []

    with conn.transaction():
        assert release(conn, [c2, c0]) == 2
        assert visible_in(conn, "rel", c0.msg_id) == 0
        assert visible_in(conn, "rel", c2.msg_id) == 0
    assert visible_in(conn, "rel", c1.msg_id) > 60
    by_index = {t["task_index"]: t for t in tasks(conn, run_id)}
    assert [(by_index[i]["status"], by_index[i]["attempts_count"]) for i in range(3)] == [
        ("queued", 0), ("started", 1), ("queued", 0)]

    again = claim(conn, "rel")
    assert [(c.task_index, c.attempt) for c in again] == [(0, 1), (2, 1)]
    for c in [*again, c1]:
        assert complete(conn, c, c.input)
    assert_invariants(conn, "rel")



def test_release_of_stale_claims_is_a_noop(conn: psycopg.Connection) -> None:
    define(conn, "rel", {"a": [], "b": []})
    run_id = start(conn, "rel")
    a, b = claim(conn, "rel")
    assert complete(conn, b, "done")
    expire(conn, "rel", [a.msg_id])
    (a2,) = claim(conn, "rel")
    before = tasks(conn, run_id)
    vt_before = vt_of(conn, "rel", a2.msg_id)

    assert release(conn, [a, b, replace(a2, attempt=3), replace(a2, task_index=1)]) == 0

    assert tasks(conn, run_id) == before
    assert vt_of(conn, "rel", a2.msg_id) == vt_before
    assert release(conn, []) == 0
    assert_invariants(conn, "rel")



def test_release_after_retries_keeps_failed_attempts(conn: psycopg.Connection) -> None:
    define(conn, "rel", {"a": []}, base_delay=0)
    run_id = start(conn, "rel")
    (c,) = claim(conn, "rel")
    assert fail(conn, c, "x") == "retry"
    (c2,) = claim(conn, "rel")
    assert c2.attempt == 2
    assert release(conn, [c2]) == 1
    assert tasks(conn, run_id)[0]["attempts_count"] == 1
    (c3,) = claim(conn, "rel")
    assert c3.attempt == 2
    assert_invariants(conn, "rel")
