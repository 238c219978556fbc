"""A diamond a -> (b, c) -> d runs to completion through the real functions."""

from __future__ import annotations

import psycopg

from tests.sql.helpers import (
    ack,
    assert_invariants,
    claim,
    complete,
    define,
    run_row,
    start,
    step_statuses,
)


def test_diamond_inputs_and_run_output(conn: psycopg.Connection) -> None:
    define(conn, "diamond", {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]})
    run_id = start(conn, "diamond", {"n": 1})

    (a,) = claim(conn, "diamond")
    # A root step's input is the flow input, which is not sent twice.
    assert (a.step_slug, a.attempt, a.input, a.flow_input) == ("a", 1, {"n": 1}, None)
    assert not a.fetch_flow_input
    assert claim(conn, "diamond") == []
    assert complete(conn, a, {"a": 10})

    b, c = sorted(claim(conn, "diamond"), key=lambda x: x.step_slug)
    assert (b.step_slug, b.input) == ("b", {"a": {"a": 10}})
    assert (c.step_slug, c.input) == ("c", {"a": {"a": 10}})
    assert b.flow_input == {"n": 1}
    assert complete(conn, c, "c-out")
    assert claim(conn, "diamond") == [], "d must wait for both b and c"
    assert complete(conn, b, ["b-out"])

    (d,) = claim(conn, "diamond")
    assert (d.step_slug, d.input) == ("d", {"b": ["b-out"], "c": "c-out"})
    assert run_row(conn, run_id)["status"] == "started"
    assert complete(conn, d, {"done": True})

    run = run_row(conn, run_id)
    assert run["status"] == "completed"
    assert run["output"] == {"d": {"done": True}}
    assert run["completed_at"] is not None
    assert run["remaining_steps"] == 0
    assert step_statuses(conn, run_id) == dict.fromkeys("abcd", "completed")
    assert_invariants(conn, "diamond")


def test_run_output_has_every_leaf(conn: psycopg.Connection) -> None:
    define(conn, "fork", {"a": [], "b": ["a"], "c": ["a"]})
    run_id = start(conn, "fork")
    (a,) = claim(conn, "fork")
    assert complete(conn, a, 1)
    for task in claim(conn, "fork"):
        assert complete(conn, task, task.step_slug.upper())
    assert run_row(conn, run_id)["output"] == {"b": "B", "c": "C"}
    assert_invariants(conn, "fork")


def test_both_leaves_acknowledged_together_are_both_in_the_output(
        conn: psycopg.Connection) -> None:
    define(conn, "fork2", {"a": [], "b": ["a"], "c": ["a"]})
    run_id = start(conn, "fork2")
    (a,) = claim(conn, "fork2")
    assert complete(conn, a, 1)
    b, c = sorted(claim(conn, "fork2"), key=lambda x: x.step_slug)
    assert ack(conn, [c, b], ["C", None]) == ["completed", "completed"]
    assert run_row(conn, run_id)["output"] == {"b": None, "c": "C"}
    assert_invariants(conn, "fork2")


def test_one_leaf_runs_acknowledged_together_each_get_their_own_output(
        conn: psycopg.Connection) -> None:
    define(conn, "chain2", {"a": [], "z": ["a"]})
    runs = [start(conn, "chain2") for _ in range(3)]
    firsts = claim(conn, "chain2")
    assert ack(conn, firsts, [0, 1, 2]) == ["completed"] * 3
    lasts = sorted(claim(conn, "chain2"), key=lambda x: runs.index(x.run_id))
    assert [x.input for x in lasts] == [{"a": 0}, {"a": 1}, {"a": 2}]
    outputs: list[object] = [None, {"n": 1}, [1, 2]]
    assert ack(conn, lasts, outputs) == ["completed"] * 3
    assert [run_row(conn, r)["output"] for r in runs] == [{"z": o} for o in outputs]
    assert_invariants(conn, "chain2")
