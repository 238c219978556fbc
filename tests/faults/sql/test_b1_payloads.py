"""B1 (SQL side): payload sizes and shapes. Inputs over flowworker.config
'max_input_bytes' are refused by start_flow with SQLSTATE 54000 naming the
limit, and nothing is created; outputs over 'max_output_bytes' are refused by
complete_task and ack_tasks, leaving the task as it was; `\\u0000` and very
deep nesting give one clear error or a faithful round trip, never half a run;
NOTIFY carries no payload at all."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.sql.helpers import (
    WORKER,
    Claim,
    assert_invariants,
    claim,
    complete,
    define,
    fail,
    queued_ids,
    release,
    run_row,
    start,
    tasks,
)
from tests.sql.start_flow.test_notify import SENTINEL, received

MiB = 1024 * 1024
DEFAULT_LIMIT = MiB


def limit(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute("SELECT value FROM flowworker.config WHERE name = %s", (name,)).fetchone()
    assert row is not None
    value: int = row[0]
    return value


def nothing_created(conn: psycopg.Connection, flow: str) -> None:
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM flowworker.runs),"
        " (SELECT count(*) FROM flowworker.step_states),"
        " (SELECT count(*) FROM flowworker.step_tasks)").fetchone()
    assert counts == (0, 0, 0)
    assert queued_ids(conn, flow) == set()


def assert_over_limit(exc: psycopg.Error, what: str, limit_bytes: int, setting: str) -> None:
    assert exc.sqlstate == "54000"
    message = exc.diag.message_primary or ""
    assert message.startswith(what), message
    assert f"over the limit of {limit_bytes} bytes" in message, message
    assert setting in (exc.diag.message_hint or ""), exc.diag.message_hint


def jsonb_size(conn: psycopg.Connection, value: Any) -> int:
    row = conn.execute("SELECT pg_column_size(%s)", (Jsonb(value),)).fetchone()
    assert row is not None
    size: int = row[0]
    return size


@pytest.fixture
def flow(conn: psycopg.Connection) -> str:
    define(conn, "big", {"a": []})
    return "big"


@pytest.mark.parametrize("megabytes", [10, 200])
def test_large_inputs_are_refused_naming_the_limit(
        conn: psycopg.Connection, flow: str, megabytes: int) -> None:
    assert limit(conn, "max_input_bytes") == DEFAULT_LIMIT
    payload = {"blob": "x" * (megabytes * 1000 * 1000)}
    with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
        start(conn, flow, payload)
    assert_over_limit(info.value, "the input of flow 'big' is", DEFAULT_LIMIT, "max_input_bytes")
    nothing_created(conn, flow)


def test_the_limit_is_exact_and_counts_the_input_uncompressed(
        conn: psycopg.Connection, flow: str) -> None:
    overhead = jsonb_size(conn, {"blob": "x" * 100_000}) - 100_000
    at_limit = {"blob": "x" * (DEFAULT_LIMIT - overhead)}
    assert jsonb_size(conn, at_limit) == DEFAULT_LIMIT
    start(conn, flow, at_limit)
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        start(conn, flow, {"blob": "x" * (DEFAULT_LIMIT - overhead + 1)})
    # A value read from a table arrives compressed (10 MB of one letter is
    # ~100 kB of pglz); the limit is on what it is, not on how it is stored.
    conn.execute("CREATE TEMP TABLE squeezed AS "
                 "SELECT jsonb_build_object('blob', repeat('x', 10000000)) AS input")
    stored = conn.execute("SELECT pg_column_size(input), pg_column_compression(input) "
                          "FROM squeezed").fetchone()
    assert stored is not None
    assert stored[0] < DEFAULT_LIMIT
    assert stored[1] is not None
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        conn.execute("SELECT flowworker.start_flow('big', input) FROM squeezed")
    assert conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (1,)


def test_raising_the_limit_admits_a_2_mb_input(conn: psycopg.Connection, flow: str) -> None:
    payload = {"blob": "y" * (2 * MiB)}
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        start(conn, flow, payload)
    conn.execute("UPDATE flowworker.config SET value = 4 * 1024 * 1024 "
                 "WHERE name = 'max_input_bytes'")
    run_id = start(conn, flow, payload)
    (c,) = claim(conn, flow)
    assert (c.run_id, c.input, c.flow_input) == (run_id, payload, None)  # input is flow input
    assert complete(conn, c, "ok")
    assert run_row(conn, run_id)["status"] == "completed"


def assert_task_unchanged(conn: psycopg.Connection, c: Claim) -> None:
    (task,) = [t for t in tasks(conn, c.run_id) if t["task_index"] == c.task_index]
    assert (task["status"], task["attempts_count"], task["output"]) == ("started", c.attempt, None)
    assert c.msg_id in queued_ids(conn, "big")


def test_oversized_output_is_refused_and_the_task_is_left_as_it_was(
        conn: psycopg.Connection) -> None:
    define(conn, "big", {"each": []}, maps=("each",), base_delay=0)
    run_id = start(conn, "big", [0, 1])
    first, second = claim(conn, "big")
    assert limit(conn, "max_output_bytes") == DEFAULT_LIMIT
    fifty_mb = {"blob": "z" * (50 * 1000 * 1000)}

    with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
        complete(conn, first, fifty_mb)
    assert_over_limit(info.value, "the output of step 'each' is", DEFAULT_LIMIT,
                      "max_output_bytes")
    assert_task_unchanged(conn, first)

    # In a batch, one oversized output refuses the whole batch: the good
    # outcome before it (ack_tasks applies them in task order) is undone too.
    two_mb = {"blob": "z" * (2 * MiB)}
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        conn.execute(
            "SELECT * FROM flowworker.ack_tasks(%s, %s, %s, %s, %s, %s, %s)",
            ([second.run_id, first.run_id], ["each", "each"], [1, 0],
             [second.attempt, first.attempt], [Jsonb(two_mb), Jsonb("fine")], [None, None],
             [second.worker, first.worker]))
    assert_task_unchanged(conn, first)
    assert_task_unchanged(conn, second)

    # What the worker does next: fail the attempt, with the reason.
    assert fail(conn, second, "output is over max_output_bytes") == "retry"
    assert complete(conn, first, "fine")
    (again,) = claim(conn, "big")
    assert (again.task_index, again.attempt) == (1, 2)
    assert complete(conn, again, "small")
    assert run_row(conn, run_id)["output"] == {"each": ["fine", "small"]}
    assert_invariants(conn, "big")


def test_nul_escape_is_one_clear_error(conn: psycopg.Connection, flow: str) -> None:
    with pytest.raises(psycopg.errors.UntranslatableCharacter) as info:
        start(conn, flow, {"text": "before\x00after"})
    assert "\\u0000" in (info.value.diag.message_detail or ""), info.value.diag.message_detail
    nothing_created(conn, flow)
    # The same in an output: refused, and the claim is still good.
    start(conn, flow, {"ok": True})
    (c,) = claim(conn, flow)
    with pytest.raises(psycopg.errors.UntranslatableCharacter):
        complete(conn, c, ["\x00"])
    assert_task_unchanged(conn, c)
    assert complete(conn, c, ["fine"])


def nested(kind: str, depth: int) -> str:
    """JSON text nested `depth` levels deep, as jsonb prints it."""
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"k": ' * depth + "0" + "}" * depth


def start_text(conn: psycopg.Connection, flow: str, text: str) -> None:
    conn.execute("SELECT flowworker.start_flow(%s, %s::jsonb)", (flow, text))


@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("depth", [10_000, 1_000_000])
def test_deep_nesting_round_trips_or_is_refused_whole(
        conn: psycopg.Connection, flow: str, kind: str, depth: int) -> None:
    """Python's json cannot even parse this (RecursionError), so it travels as
    text. Either the database takes it and hands back exactly what it took,
    or refuses it with one clear error and creates nothing."""
    text = nested(kind, depth)
    refused: psycopg.Error | None = None
    try:
        start_text(conn, flow, text)
    except psycopg.Error as exc:
        refused = exc
    if refused is not None:
        # 54001: stack depth limit exceeded; 54000: over max_input_bytes.
        assert refused.sqlstate in {"54001", "54000"}, (refused.sqlstate, str(refused)[:200])
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        nothing_created(conn, flow)
        return
    row = conn.execute("SELECT run_id, input::text FROM flowworker.runs").fetchone()
    assert row is not None
    assert row[1] == text
    claimed = conn.execute(
        "SELECT run_id, step_slug, task_index, attempt, input::text, flow_input::text "
        "FROM flowworker.start_tasks(%s, %s)", (flow, WORKER)).fetchall()
    assert claimed == [(row[0], "a", 0, 1, text, None)]
    applied = conn.execute(
        "SELECT flowworker.complete_task(run_id, 'a', 0, 1, input, %s) FROM flowworker.runs",
        (WORKER,)).fetchone()
    assert applied == (True,)
    out = conn.execute("SELECT status, output -> 'a' = input FROM flowworker.runs").fetchone()
    assert out == ("completed", True)


@pytest.fixture
def listener(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("LISTEN flowworker_big")
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(SENTINEL)))
        yield conn


def test_notifications_carry_no_payload(conn: psycopg.Connection,
                                        listener: psycopg.Connection) -> None:
    define(conn, "big", {"a": [], "b": ["a"]}, base_delay=0)
    near_limit = {"blob": "n" * (DEFAULT_LIMIT - 1000)}
    run_id = start(conn, "big", near_limit)            # queues a: notify
    (a,) = claim(conn, "big")
    assert release(conn, [a]) == 1                      # visible at once: notify
    (a,) = claim(conn, "big")
    assert fail(conn, a, "e" * (10 * MiB)) == "retry"   # retry now: notify
    (a,) = claim(conn, "big")
    assert complete(conn, a, near_limit)                # queues b: notify
    got = received(listener, conn)
    assert got == [("flowworker_big", "")] * 4
    assert run_row(conn, run_id)["status"] == "started"
