"""RELIABILITY B5: wide maps and what they send.

A root map over a large input must not send the whole input with every
element (262,000 claims of 1 MB each was the defect): each task keeps its
element, and the flow input is left for the worker to fetch once per run
when it is large. A map is capped at max_map_tasks tasks, and a map step
whose outputs add up past max_map_output_bytes fails its run clearly
instead of building a value jsonb cannot hold.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.sql.helpers import (
    ack,
    assert_invariants,
    claim,
    complete,
    define,
    run_row,
    start,
    step_row,
    step_statuses,
)

WIDE = 20_000


def set_limit(conn: psycopg.Connection, name: str, value: int) -> None:
    conn.execute("UPDATE flowworker.config SET value = %s WHERE name = %s", (value, name))


def test_a_wide_root_map_sends_each_task_its_element_and_not_the_input(
        conn: psycopg.Connection) -> None:
    define(conn, "wide", {"each": []}, maps=("each",))
    elements = [{"i": i, "pad": "x" * 10} for i in range(WIDE)]
    run_id = start(conn, "wide", elements)
    stored = conn.execute("SELECT pg_column_size(input) FROM flowworker.runs").fetchone()
    assert stored is not None
    assert stored[0] > 8192, "the input must count as large"

    rows = conn.execute(
        "SELECT task_index, input, flow_input, fetch_flow_input, "
        "       octet_length(input::text) + coalesce(octet_length(flow_input::text), 0) "
        "FROM flowworker.start_tasks('wide', gen_random_uuid(), 100, 5)").fetchall()
    assert len(rows) == 100
    for index, task_input, flow_input, fetch, sent in rows:
        assert task_input == elements[index]
        assert (flow_input, fetch) == (None, True)
        assert sent < 64, f"a claim sent {sent} bytes for one task"
    # The input the worker fetches, once per run, is the whole of it.
    row = conn.execute("SELECT input FROM flowworker.runs WHERE run_id = %s",
                       (run_id,)).fetchone()
    assert row is not None
    assert row[0] == elements


def test_a_small_flow_input_comes_along_with_map_and_dependent_tasks(
        conn: psycopg.Connection) -> None:
    define(conn, "small", {"a": [], "each": ["a"], "z": ["each"]}, maps=("each",))
    run_id = start(conn, "small", {"k": 1})
    (a,) = claim(conn, "small")
    assert (a.input, a.flow_input, a.fetch_flow_input) == ({"k": 1}, None, False)
    assert complete(conn, a, [10, 20])
    each = claim(conn, "small")
    assert [(c.input, c.flow_input, c.fetch_flow_input) for c in each] == [
        (10, {"k": 1}, False), (20, {"k": 1}, False)]
    assert ack(conn, each, [1, 2]) == ["completed", "completed"]
    (z,) = claim(conn, "small")
    assert (z.input, z.flow_input) == ({"each": [1, 2]}, {"k": 1})
    assert complete(conn, z, "done")
    assert run_row(conn, run_id)["output"] == {"z": "done"}


def test_a_root_map_wider_than_the_limit_is_refused_at_start(conn: psycopg.Connection) -> None:
    define(conn, "capped", {"each": []}, maps=("each",))
    set_limit(conn, "max_map_tasks", 10)
    start(conn, "capped", list(range(10)))
    with pytest.raises(psycopg.errors.InvalidParameterValue,
                       match="flow 'capped' maps step 'each' over its input: 11 elements, "
                             "over the limit of 10"):
        start(conn, "capped", list(range(11)))
    assert conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (1,)


def test_a_dependent_map_wider_than_the_limit_fails_its_run(conn: psycopg.Connection) -> None:
    define(conn, "capped", {"a": [], "each": ["a"]}, maps=("each",))
    set_limit(conn, "max_map_tasks", 10)
    run_id = start(conn, "capped")
    (a,) = claim(conn, "capped")
    assert complete(conn, a, list(range(11)))
    run = run_row(conn, run_id)
    assert run["status"] == "failed"
    assert run["error_message"] == ("step each failed: it would start 11 map tasks, over the "
                                    "limit of 10 (flowworker.config max_map_tasks)")
    assert step_statuses(conn, run_id) == {"a": "completed", "each": "failed"}
    assert claim(conn, "capped") == []
    assert_invariants(conn, "capped")


def test_a_map_whose_outputs_add_up_past_the_limit_fails_its_run(
        conn: psycopg.Connection) -> None:
    define(conn, "heavy", {"each": [], "after": ["each"]}, maps=("each",))
    set_limit(conn, "max_map_output_bytes", 5000)
    run_id = start(conn, "heavy", [0, 1, 2, 3, 4])
    claims = claim(conn, "heavy")
    # Four outputs of ~1.2 KB fit; the fifth takes the map over 5,000 bytes.
    assert ack(conn, claims[:4], [{"blob": "y" * 1200}] * 4) == ["completed"] * 4
    assert run_row(conn, run_id)["status"] == "started"
    assert ack(conn, claims[4:], [{"blob": "y" * 1200}]) == ["completed"]
    run = run_row(conn, run_id)
    assert run["status"] == "failed"
    assert run["error_message"].startswith(
        "step each failed: the outputs of its 5 map tasks add up to ")
    assert run["error_message"].endswith(
        "bytes, over the limit of 5000 bytes (flowworker.config max_map_output_bytes)")
    assert step_row(conn, run_id, "each")["output"] is None
    assert step_statuses(conn, run_id) == {"each": "failed", "after": "cancelled"}
    assert claim(conn, "heavy") == []
    assert_invariants(conn, "heavy")


def test_a_map_within_the_limit_completes_with_its_outputs_in_order(
        conn: psycopg.Connection) -> None:
    define(conn, "light", {"each": []}, maps=("each",))
    run_id = start(conn, "light", [0, 1, 2])
    claims = claim(conn, "light")
    assert ack(conn, list(reversed(claims)), [Jsonb(2).obj, 1, 0]) == ["completed"] * 3
    assert run_row(conn, run_id)["output"] == {"each": [0, 1, 2]}
    assert_invariants(conn, "light")
