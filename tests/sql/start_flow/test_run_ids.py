"""Run ids: UUIDs version 7 in start order (0045_function_new_run_id.sql),
so that runs sit together in every index keyed by run_id; ids a caller
gives are kept as given."""

from __future__ import annotations

import time
import uuid

import psycopg

from tests.sql.helpers import define, start


def millis(run_id: uuid.UUID) -> int:
    """The time a version-7 id carries, in milliseconds since the epoch."""
    return run_id.int >> 80


def start_batch(conn: psycopg.Connection, n: int,
                ids: list[uuid.UUID | None] | None = None) -> list[uuid.UUID]:
    return [r[0] for r in conn.execute(
        "SELECT run_id FROM flowworker.start_flows('ids', array_fill('{}'::jsonb, ARRAY[%s]), "
        "%s::uuid[])", (n, ids)).fetchall()]


def test_new_ids_are_version_7_and_carry_the_start_time(conn: psycopg.Connection) -> None:
    define(conn, "ids", {"a": []})
    before = int(time.time() * 1000)
    ids = [*start_batch(conn, 200), start(conn, "ids")]
    after = int(time.time() * 1000)
    assert len(set(ids)) == len(ids)
    assert {(i.version, i.variant) for i in ids} == {(7, uuid.RFC_4122)}
    # The server's clock and ours: allow a second either way.
    assert all(before - 1000 <= millis(i) <= after + 1000 for i in ids)


def test_later_batches_sort_after_earlier_ones(conn: psycopg.Connection) -> None:
    define(conn, "ids", {"a": []})
    first = start_batch(conn, 100)
    conn.execute("SELECT pg_sleep(0.005)")  # the next millisecond at least
    second = start_batch(conn, 100)
    assert max(first) < min(second)


def test_given_ids_are_kept_and_only_the_missing_ones_made(conn: psycopg.Connection) -> None:
    define(conn, "ids", {"a": []})
    mine = uuid.uuid4()
    got = start_batch(conn, 3, [mine, None, None])
    assert got[0] == mine
    assert [i.version for i in got[1:]] == [7, 7]
    assert start_batch(conn, 1, [mine]) == [mine]  # a repeated start: the same run


def test_the_column_default_is_time_ordered_too(conn: psycopg.Connection) -> None:
    define(conn, "ids", {"a": []})
    row = conn.execute("INSERT INTO flowworker.runs (flow_slug, input, remaining_steps) "
                       "VALUES ('ids', '{}', 1) RETURNING run_id").fetchone()
    assert row is not None
    assert row[0].version == 7
