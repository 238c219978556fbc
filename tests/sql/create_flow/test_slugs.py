"""Slugs pass an allow-list before any dynamic SQL runs."""

from __future__ import annotations

import psycopg
import pytest

BAD = [
    "a'; DROP TABLE x;--", "Q", '"q"', "", "a" * 49, "ab\n", "a b", "1a", "_a", "a-b",
    "\u00e9", "\uff41\uff42\uff43",  # e acute; full-width abc
]

CALLS = [
    "SELECT flowworker.create_flow(%s)",
    "SELECT flowworker.add_step(%s, 'ok')",
    "SELECT flowworker.add_step('ok', %s)",
    "SELECT flowworker.add_step('ok', 'ok2', deps => ARRAY[%s])",
    "SELECT flowworker.start_flow(%s)",
    "SELECT * FROM flowworker.start_tasks(%s, gen_random_uuid())",
    "SELECT flowworker.queue_create(%s)",
    "SELECT flowworker.queue_set_vt(%s, '{1}', 0)",
    "SELECT * FROM flowworker.queue_metrics(%s)",
    "SELECT flowworker.queue_archive(%s, '{1}')",
]


def catalog(conn: psycopg.Connection) -> tuple[object, ...]:
    return (
        conn.execute("SELECT count(*), max(oid::int8) FROM pg_class").fetchone(),
        conn.execute("SELECT count(*) FROM pg_type").fetchone(),
        conn.execute("SELECT count(*) FROM pg_proc").fetchone(),
        conn.execute("SELECT * FROM flowworker.flows ORDER BY flow_slug").fetchall(),
        conn.execute("SELECT * FROM flowworker.steps ORDER BY step_slug").fetchall(),
    )


def test_bad_slugs_are_rejected_before_dynamic_sql(conn: psycopg.Connection) -> None:
    conn.execute("SELECT flowworker.create_flow('ok')")
    conn.execute("SELECT flowworker.add_step('ok', 'ok')")
    conn.execute("CREATE TABLE public.x (id int)")
    before = catalog(conn)
    for call in CALLS:
        for slug in BAD:
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid"):
                conn.execute(call, (slug,))
    assert catalog(conn) == before
    assert conn.execute("SELECT to_regclass('public.x') IS NOT NULL").fetchone() == (True,)


def test_longest_slug_keeps_derived_names_whole(conn: psycopg.Connection) -> None:
    slug = "a" * 47 + "z"
    conn.execute("SELECT flowworker.create_flow(%s)", (slug,))
    conn.execute("SELECT flowworker.add_step(%s, %s)", (slug, "b" * 48))
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relname LIKE %s ORDER BY relname",
        (f"%{slug}%",)).fetchall()
    assert [r[0] for r in rows] == [f"a_{slug}", f"a_{slug}$pkey", f"q_{slug}", f"q_{slug}$pkey",
                                   f"q_{slug}$seq", f"q_{slug}$vt"]
    conn.execute("SELECT flowworker.start_flow(%s)", (slug,))
    assert len(conn.execute("SELECT * FROM flowworker.start_tasks(%s, gen_random_uuid())",
                            (slug,)).fetchall()) == 1
