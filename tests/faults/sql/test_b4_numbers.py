"""RELIABILITY B4: numbers tiny in jsonb and huge as text.

`1e5000` is 6 bytes of jsonb and 5,001 digits as text, more than Python's
JSON decoder takes; an array of a few hundred `1e131071` is 6 KB stored and
tens of MB at every claim. Such numbers are refused where payloads enter:
start_flow(s) for inputs, ack_tasks (and so complete_task) for outputs,
with SQLSTATE 22003 and a message naming the limit. Nothing is written.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.sql.helpers import (
    ack,
    assert_invariants,
    claim,
    complete,
    define,
    run_row,
    start,
    tasks,
)

LIMIT = "JSON numbers must be 0 or between 1e-308 and 1e308 in magnitude"

HOSTILE = [
    "1e5000",
    "-1e400",
    "1e-400",
    "1.5e308",
    '{"n": 1e5000}',
    '{"deep": [1, {"x": [2, 3, -1e-309]}]}',
    "[" + ",".join(["1e131071"] * 300) + "]",
]
FINE = ["0", "-0.0", "1e308", "-1e308", "1e-308", "12345678901234567890.5",
        '"1e999999"', '{"a": [null, true, "x", 1.5]}']


def start_text(conn: psycopg.Connection, flow: str, text: str) -> uuid.UUID:
    row = conn.execute("SELECT run_id FROM flowworker.start_flow(%s, %s::jsonb)",
                       (flow, text)).fetchone()
    assert row is not None
    run_id: uuid.UUID = row[0]
    return run_id


def counts(conn: psycopg.Connection) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM flowworker.runs), (SELECT count(*) FROM "
        "flowworker.step_tasks), (SELECT count(*) FROM flowworker.q_num)").fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_number_in_an_input_is_refused_and_starts_nothing(
        conn: psycopg.Connection, text: str) -> None:
    define(conn, "num", {"a": []})
    before = counts(conn)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange,
                       match=f"the input of flow 'num' holds a number beyond the limit: {LIMIT}"):
        start_text(conn, "num", text)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        conn.execute("SELECT count(*) FROM flowworker.start_flows('num', "
                     "ARRAY['{}'::jsonb, %s::jsonb, '[]'::jsonb])", (text,))
    assert counts(conn) == before


@pytest.mark.parametrize("text", FINE)
def test_numbers_a_double_can_hold_are_fine(conn: psycopg.Connection, text: str) -> None:
    define(conn, "num", {"a": []})
    run_id = start_text(conn, "num", text)
    (c,) = claim(conn, "num")
    assert c.run_id == run_id
    assert complete(conn, c, None)
    assert run_row(conn, run_id)["status"] == "completed"


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_number_in_an_output_is_refused_and_the_task_left_as_it_was(
        conn: psycopg.Connection, text: str) -> None:
    define(conn, "num", {"a": []})
    run_id = start(conn, "num")
    (c,) = claim(conn, "num")
    before = tasks(conn, run_id)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange,
                       match="the output of step 'a' holds a number beyond the limit"):
        conn.execute("SELECT flowworker.complete_task(%s, 'a', 0, %s, %s::jsonb, %s)",
                     (run_id, c.attempt, text, c.worker))
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        conn.execute("SELECT * FROM flowworker.ack_tasks(%s, %s, %s, %s, ARRAY[%s::jsonb], "
                     "%s, %s)", ([run_id], ["a"], [0], [c.attempt], text, [None], [c.worker]))
    assert tasks(conn, run_id) == before
    # What the worker does then: fail that attempt (the completer's fallback).
    assert ack(conn, [c], [None], ["output refused by the database: ..."]) == ["retry"]
    assert_invariants(conn, "num")
