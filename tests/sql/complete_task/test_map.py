"""Map steps: one task per element, output ordered by task_index."""

from __future__ import annotations

import psycopg
import pytest

from tests.sql.helpers import (
    assert_invariants,
    claim,
    complete,
    define,
    run_row,
    start,
    step_row,
    step_statuses,
    tasks,
)


def test_root_map_over_flow_input_completed_out_of_order(conn: psycopg.Connection) -> None:
    define(conn, "m", {"sq": [], "total": ["sq"]}, maps=("sq",))
    run_id = start(conn, "m", [1, 2, 3, 4, 5])
    claims = claim(conn, "m")
    assert [(c.step_slug, c.task_index, c.input) for c in claims] == [
        ("sq", i, i + 1) for i in range(5)]
    assert all(c.flow_input == [1, 2, 3, 4, 5] for c in claims)
    assert step_row(conn, run_id, "sq")["initial_tasks"] == 5

    for c in (claims[3], claims[0], claims[4], claims[2]):
        assert complete(conn, c, c.input * c.input)
    assert step_row(conn, run_id, "sq")["status"] == "started"
    assert step_row(conn, run_id, "sq")["remaining_tasks"] == 1
    assert claim(conn, "m") == [], "total must wait for every map task"
    assert complete(conn, claims[1], 4)

    assert step_row(conn, run_id, "sq")["output"] == [1, 4, 9, 16, 25]
    (total,) = claim(conn, "m")
    assert total.input == {"sq": [1, 4, 9, 16, 25]}
    assert complete(conn, total, 55)
    assert run_row(conn, run_id)["output"] == {"total": 55}
    assert_invariants(conn, "m")



def test_map_over_dependency_output(conn: psycopg.Connection) -> None:
    define(conn, "md", {"src": [], "each": ["src"]}, maps=("each",))
    run_id = start(conn, "md", {"k": 5})
    (src,) = claim(conn, "md")
    assert complete(conn, src, ["a", "b", "c", "d", "e"])
    claims = claim(conn, "md")
    assert [(c.task_index, c.input) for c in claims] == list(enumerate("abcde"))
    for c in reversed(claims):
        assert complete(conn, c, {"up": c.input.upper()})
    run = run_row(conn, run_id)
    assert run["status"] == "completed"
    assert run["output"] == {"each": [{"up": x} for x in "ABCDE"]}
    assert_invariants(conn, "md")



def test_empty_root_map_completes_at_once_and_starts_dependents(
        conn: psycopg.Connection) -> None:
    define(conn, "em", {"each": [], "after": ["each"]}, maps=("each",))
    run_id = start(conn, "em", [])
    assert step_row(conn, run_id, "each")["status"] == "completed"
    assert step_row(conn, run_id, "each")["output"] == []
    assert [t["step_slug"] for t in tasks(conn, run_id)] == ["after"]
    (after,) = claim(conn, "em")
    assert after.input == {"each": []}
    assert_invariants(conn, "em")



def test_empty_map_over_dependency_chains_to_completion(conn: psycopg.Connection) -> None:
    define(conn, "ed", {"src": [], "each": ["src"], "again": ["each"]},
           maps=("each", "again"))
    run_id = start(conn, "ed")
    (src,) = claim(conn, "ed")
    assert complete(conn, src, [])
    run = run_row(conn, run_id)
    assert run["status"] == "completed"
    assert run["output"] == {"again": []}
    assert step_statuses(conn, run_id) == dict.fromkeys(("src", "each", "again"), "completed")
    assert_invariants(conn, "ed")



def test_root_map_rejects_non_array_input(conn: psycopg.Connection) -> None:
    define(conn, "rm", {"each": []}, maps=("each",))
    for bad in ({"a": 1}, "text", 3, True):
        with pytest.raises(psycopg.errors.InvalidParameterValue,
                           match="maps step 'each' over its input, which must be a JSON array"):
            start(conn, "rm", bad)
    assert conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (0,)
    assert_invariants(conn, "rm")



def test_non_array_from_dependency_fails_the_run(conn: psycopg.Connection) -> None:
    define(conn, "nd", {"src": [], "each": ["src"], "other": ["src"]}, maps=("each",))
    run_id = start(conn, "nd")
    (src,) = claim(conn, "nd")
    assert complete(conn, src, {"not": "an array"})
    run = run_row(conn, run_id)
    assert run["status"] == "failed"
    assert run["error_message"] == (
        "step each failed: a map step expects an array from src, got object")
    assert step_statuses(conn, run_id) == {
        "src": "completed", "each": "failed", "other": "cancelled"}
    assert claim(conn, "nd") == []
    assert all(t["status"] != "queued" for t in tasks(conn, run_id))
    assert_invariants(conn, "nd")
