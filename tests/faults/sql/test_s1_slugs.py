"""S1: hostile slugs. Every slug passes the allow-list ^[a-z][a-z0-9_]{0,47}$
in flowworker.check_slug before any dynamic SQL runs; a rejected call leaves
the catalog as it was; accepted slugs map one to one onto queue tables whose
names, and the names of everything else derived from them, stay within 63
bytes and never collide with another flow's."""

from __future__ import annotations

import re
import string
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from tests.sql.helpers import claim, define, start

SLUG = re.compile(r"[a-z][a-z0-9_]{0,47}")
NAMEDATALEN = 63

# Everything create_flow makes for one flow: queue, archive, their primary
# keys, the message sequence and the claim index.
RELATIONS_PER_FLOW = 6

settings.register_profile(
    "flowworker-s1",
    max_examples=5000,
    deadline=None,
    database=None,  # failures print their example; nothing is kept between runs
    suppress_health_check=[HealthCheck.too_slow],
)

# PostgreSQL text cannot hold NUL at all (the driver refuses it before sending),
# and lone surrogates are not UTF-8: everything else is fair game.
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
SLUG_CHARS = string.ascii_lowercase + string.digits + "_"
VALID = st.builds(str.__add__, st.sampled_from(string.ascii_lowercase),
                  st.text(SLUG_CHARS, max_size=47))
# Near misses: a valid slug with one bad character in it, one that starts
# wrongly, or one that is too long.
BAD_CHARS = "Q -'\";$\\\n\t.\u00e9\uff41\u0131\u212a\u0430\u200b"
NEAR_MISS = st.one_of(
    st.builds(lambda a, bad, b: a + bad + b, st.text(SLUG_CHARS, max_size=30),
              st.sampled_from(BAD_CHARS), st.text(SLUG_CHARS, max_size=30)),
    st.builds(str.__add__, st.sampled_from(string.digits + "_"), st.text(SLUG_CHARS, max_size=47)),
    st.text(SLUG_CHARS, min_size=49, max_size=80),
)
# Of twenty draws, twelve are any text at all, seven near misses and one a
# valid slug (each new one creates a queue, the slow part of this test).
SLUGS = st.sampled_from([ANY_TEXT] * 12 + [NEAR_MISS] * 7 + [VALID]).flatmap(lambda s: s)

# Cheap enough to ask after every call: a new table, index, sequence, view,
# function or type anywhere takes a new, higher OID (the OID indexes answer
# max() at once); a dropped one shows in the final counts below.
PROBE = """
    SELECT (SELECT max(oid) FROM pg_class), (SELECT max(oid) FROM pg_proc),
           (SELECT max(oid) FROM pg_type), (SELECT count(*) FROM flowworker.flows),
           to_regclass('public.x') IS NOT NULL"""

COUNTS = """
    SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'flowworker'::regnamespace),
           (SELECT count(*) FROM pg_proc WHERE pronamespace = 'flowworker'::regnamespace),
           (SELECT max(octet_length(relname::text)) FROM pg_class
            WHERE relnamespace = 'flowworker'::regnamespace)"""


def probe(conn: psycopg.Connection) -> tuple[object, ...]:
    row = conn.execute(PROBE).fetchone()
    assert row is not None
    return tuple(row)


def counts(conn: psycopg.Connection) -> tuple[int, int, int]:
    row = conn.execute(COUNTS).fetchone()
    assert row is not None
    relations, functions, longest = row
    return relations, functions, longest


def assert_rejected_by_check_slug(conn: psycopg.Connection, call: str, slug: str) -> None:
    """The call fails with 22023 raised by check_slug itself, and nothing on
    the way there ran dynamic SQL (no EXECUTE, no queue_create)."""
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        conn.execute(call, (slug,))
    diag = info.value.diag
    assert diag.sqlstate == "22023"
    assert (diag.message_primary or "").startswith("invalid ")
    context = diag.context or ""
    assert context.splitlines()[0].startswith(
        "PL/pgSQL function flowworker.check_slug(text,text) line"), context
    assert "at EXECUTE" not in context, context
    assert "queue_create" not in context, context


def test_random_slugs_are_checked_before_dynamic_sql(conn: psycopg.Connection,
                                                     tmp_path: Path) -> None:
    set_hypothesis_home_dir(tmp_path / "hypothesis")  # its caches stay out of the tree
    conn.execute("CREATE TABLE public.x (id int)")
    relations_before, functions_before, _ = counts(conn)
    accepted: set[str] = set()
    last = [probe(conn)]

    @settings(settings.get_profile("flowworker-s1"))
    @given(slug=SLUGS)
    @example(slug="a'; DROP TABLE x;--")
    @example(slug="x; DROP TABLE public.x")
    @example(slug='"q"')
    @example(slug="Q")
    @example(slug="")
    @example(slug="a" * 48)  # the longest accepted slug
    @example(slug="a" * 49)
    @example(slug="a" * 64)
    @example(slug="b" * 300)
    @example(slug="\u00e9" * 32)  # 64 bytes of e-acute
    @example(slug="\uff51\uff55\uff45\uff55\uff45")  # full-width "queue"
    @example(slug="\u0131")  # dotless i: lower-cases and upper-cases oddly
    @example(slug="\u212a")  # Kelvin sign: folds to k in some case mappings
    @example(slug="ab\n")
    @example(slug="a\nb")
    @example(slug="a b")
    @example(slug="a$b")
    @example(slug="a-b")
    @example(slug="1a")
    @example(slug="_a")
    def check(slug: str) -> None:
        if not SLUG.fullmatch(slug):
            assert_rejected_by_check_slug(conn, "SELECT flowworker.check_slug(%s)", slug)
            assert_rejected_by_check_slug(conn, "SELECT flowworker.create_flow(%s)", slug)
            assert probe(conn) == last[0], f"a rejected slug {slug!r} changed the catalog"
            return
        row = conn.execute("SELECT flowworker.check_slug(%s)", (slug,)).fetchone()
        assert row == (slug,)
        if slug in accepted:
            return
        conn.execute("SELECT flowworker.create_flow(%s)", (slug,))
        row = conn.execute(
            "SELECT c.relname::text FROM pg_class c "
            "WHERE c.oid = to_regclass(format('flowworker.%%I', 'q_' || %s))", (slug,)).fetchone()
        assert row == (f"q_{slug}",), "no queue table, or its name was truncated"
        accepted.add(slug)
        last[0] = probe(conn)
        assert last[0][3:] == (len(accepted), True)

    check()

    # Nothing but the accepted flows' relations appeared, and no name was cut.
    relations, functions, longest = counts(conn)
    assert (relations, functions) == (
        relations_before + RELATIONS_PER_FLOW * len(accepted), functions_before)
    assert longest <= NAMEDATALEN
    # One queue table per accepted slug, each its own.
    rows = conn.execute(
        "SELECT f.flow_slug, to_regclass(format('flowworker.%I', 'q_' || f.flow_slug))::oid "
        "FROM flowworker.flows f").fetchall()
    assert {slug for slug, _ in rows} == accepted
    oids = [oid for _, oid in rows]
    assert None not in oids
    assert len(set(oids)) == len(oids)
    queues = conn.execute(
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'flowworker'::regnamespace "
        "AND relkind = 'r' AND relname LIKE 'q\\_%'").fetchone()
    assert queues == (len(accepted),)


# Each pair is a slug and one that ends like a name derived from it (the old
# scheme named the sequence q_<slug>_seq, the indexes q_<slug>_pkey and
# q_<slug>_vt_idx); created in both orders.
LOOKALIKES = ["x_seq", "x_pkey", "x_pkey1", "x_vt_idx", "x_vt", "x_seq_seq", "x_msg_id_seq"]


@pytest.mark.parametrize("base_first", [True, False], ids=["base-first", "lookalike-first"])
def test_slugs_that_end_like_derived_names_get_queues_of_their_own(
        conn: psycopg.Connection, base_first: bool) -> None:
    slugs = ["x", *LOOKALIKES] if base_first else [*LOOKALIKES, "x"]
    for slug in slugs:
        define(conn, slug, {"step": []})
    for slug in slugs:
        define(conn, slug, {"step": []})  # and again: idempotent, still no collision
    names = conn.execute(
        "SELECT relname::text FROM pg_class WHERE relnamespace = 'flowworker'::regnamespace "
        "AND relname ~ '^[qa]_'").fetchall()
    assert len(names) == RELATIONS_PER_FLOW * len(slugs)
    runs = {slug: start(conn, slug, {"flow": slug}) for slug in slugs}
    for slug in slugs:
        (c,) = claim(conn, slug)
        assert (c.run_id, c.input) == (runs[slug], {"flow": slug})
    for slug in slugs:
        assert claim(conn, slug) == []
