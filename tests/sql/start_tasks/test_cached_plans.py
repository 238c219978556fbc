"""Plans cached while a flow was small stay right once it is large.

A worker's connection lives for days, and PostgreSQL keeps the plans of a
function's statements for the whole session: a claim planned while the flow
had a handful of tasks once scanned every task of the flow for each batch
after it had thousands (52 -> 632 us per task). The claim and the
acknowledgement must read about as many rows as they handle, whatever the
table held when their connection first ran them.
"""

from __future__ import annotations

import psycopg

from tests.sql.helpers import claim, complete, define

GROWN = 3000
BATCH = 100


def flush_counters(conn: psycopg.Connection) -> None:
    """Counters not yet flushed to the shared statistics still show in
    pg_stat_xact_*: flush them (when the session next goes idle) first."""
    conn.execute("SELECT pg_stat_force_next_flush()")


def rows_read(conn: psycopg.Connection, table: str) -> int:
    """Heap rows this transaction read from a flowworker table, by scan or index."""
    row = conn.execute(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
        " FROM pg_stat_xact_user_tables WHERE schemaname = 'flowworker' AND relname = %s",
        (table,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_session_that_began_on_an_empty_flow_claims_by_key_when_it_is_large(
        conn: psycopg.Connection) -> None:
    define(conn, "grow", {"a": []})
    # More than five rounds: PostgreSQL settles on its generic plans by then.
    for _ in range(8):
        conn.execute("SELECT count(*) FROM flowworker.start_flows('grow', ARRAY['{}'::jsonb])")
        for c in claim(conn, "grow", batch_size=BATCH):
            assert complete(conn, c, None)
    conn.execute("SELECT count(*) FROM flowworker.start_flows('grow', array_fill('{}'::jsonb,"
                 " ARRAY[%s]))", (GROWN,))

    flush_counters(conn)
    with conn.transaction():
        claims = claim(conn, "grow", batch_size=BATCH)
        claimed_reads = rows_read(conn, "step_tasks")
    assert len(claims) == BATCH
    # A lookup per message and a few more; a scan of the flow's tasks reads > GROWN.
    assert claimed_reads < 5 * BATCH, claimed_reads

    flush_counters(conn)
    with conn.transaction():
        run_ids = [c.run_id for c in claims]
        rows = conn.execute(
            "SELECT result FROM flowworker.ack_tasks(%s, %s, %s, %s, %s, %s, %s)",
            (run_ids, [c.step_slug for c in claims], [c.task_index for c in claims],
             [c.attempt for c in claims], ["null"] * BATCH, [None] * BATCH,
             [c.worker for c in claims])).fetchall()
        acked_reads = {t: rows_read(conn, t) for t in ("step_tasks", "step_states", "runs")}
    assert [r[0] for r in rows] == ["completed"] * BATCH
    assert all(n < 5 * BATCH for n in acked_reads.values()), acked_reads
