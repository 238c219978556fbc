"""The claim query reads the (vt, msg_id) index, not the whole queue."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.sql.helpers import claim, define

CLAIM = ("SELECT msg_id, message FROM flowworker.q_plan WHERE vt <= now() "
         "ORDER BY vt, msg_id LIMIT 10 FOR UPDATE SKIP LOCKED")


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(nodes(child))
    return found


def test_claim_query_uses_the_vt_index(conn: psycopg.Connection) -> None:
    define(conn, "plan", {"a": []})
    definition = conn.execute(
        "SELECT pg_get_functiondef('flowworker.start_tasks'::regproc)").fetchone()
    assert definition is not None
    assert "WHERE vt <= now() ORDER BY vt, msg_id LIMIT $1" in definition[0]
    assert "FOR UPDATE SKIP LOCKED" in definition[0]

    conn.execute("""
        INSERT INTO flowworker.q_plan (vt, message)
        SELECT CASE WHEN i % 5 = 0 THEN now() + make_interval(secs => i)
                    ELSE now() - make_interval(secs => i % 3600) END,
               jsonb_build_object('run_id', gen_random_uuid(), 'step_slug', 'a',
                                  'task_index', 0)
        FROM generate_series(1, 50000) AS i""")
    conn.execute("ANALYZE flowworker.q_plan")

    row = conn.execute(f"EXPLAIN (FORMAT JSON) {CLAIM}").fetchone()
    assert row is not None
    plan = nodes(row[0][0]["Plan"])
    types = [n["Node Type"] for n in plan]
    assert "Seq Scan" not in types, types
    assert "Sort" not in types, types
    assert any(n.get("Index Name") == "q_plan$vt" for n in plan), types

    assert len(claim(conn, "plan", batch_size=10)) == 0  # all are orphans: archived
    assert conn.execute("SELECT count(*) FROM flowworker.a_plan").fetchone() == (10,)
