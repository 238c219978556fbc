"""extend_claims keeps current claims hidden longer and ignores stale ones."""

from __future__ import annotations

from dataclasses import replace

import psycopg
import pytest

from tests.sql.helpers import Claim, assert_invariants, claim, define, start, visible_in, vt_of


def extend(conn: psycopg.Connection, claims: list[Claim], seconds: int) -> int:
    row = conn.execute(
        "SELECT flowworker.extend_claims('ext', %s, %s, %s, %s, %s)",
        ([c.run_id for c in claims], [c.step_slug for c in claims],
         [c.task_index for c in claims], [c.attempt for c in claims], seconds),
    ).fetchone()
    assert row is not None
    extended: int = row[0]
    return extended


def test_extend_current_claims_only(conn: psycopg.Connection) -> None:
    define(conn, "ext", {"each": []}, maps=("each",), timeout=10)
    start(conn, "ext", [1, 2])
    c0, c1 = claim(conn, "ext")
    vt1 = vt_of(conn, "ext", c1.msg_id)
    with conn.transaction():
        assert extend(conn, [c0, replace(c1, attempt=2)], 600) == 1
        assert visible_in(conn, "ext", c0.msg_id) == pytest.approx(600, abs=0.001)
    assert vt_of(conn, "ext", c1.msg_id) == vt1
    with conn.transaction():
        assert extend(conn, [c0], 1) == 1
        assert visible_in(conn, "ext", c0.msg_id) > 500, "extending never shortens a claim"
    assert extend(conn, [], 600) == 0
    assert_invariants(conn, "ext")
