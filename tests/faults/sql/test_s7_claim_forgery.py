"""RELIABILITY S7: a second worker login acts on claims it does not hold.

Every function that acts on a claim checks the holding worker_id as well
as the attempt number, so a login that guesses the attempt changes nothing;
and the spans a caller passes are bounded, so a negative grace cannot make
claims expire at once and spend a healthy run's attempts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.faults.sql.conftest import Logins, login_roles
from tests.sql.helpers import (
    Claim,
    ack,
    assert_invariants,
    claim,
    complete,
    define,
    fail,
    release,
    run_row,
    start,
    tasks,
    vt_of,
)
from tests.support.database import PgServer


@pytest.fixture
def workers(pg_server: PgServer, db_url: str) -> Iterator[Logins]:
    """Two worker logins: the holder and a rival."""
    with login_roles(pg_server, db_url, {"holder": "worker", "rival": "worker"}) as made:
        yield made


def snapshot(conn: psycopg.Connection, run_id: uuid.UUID) -> tuple[object, ...]:
    return (run_row(conn, run_id), tasks(conn, run_id),
            conn.execute("SELECT msg_id, vt, read_ct FROM flowworker.q_forge").fetchall())


def test_a_rival_worker_cannot_complete_fail_release_or_extend_a_claim(
        conn: psycopg.Connection, workers: Logins) -> None:
    define(conn, "forge", {"a": [], "b": ["a"]})
    run_id = start(conn, "forge", {"n": 1})
    holder_id, rival_id = uuid.uuid4(), uuid.uuid4()
    with workers.connect("holder") as holder, workers.connect("rival") as rival:
        (c,) = claim(holder, "forge", worker=holder_id)
        forged = replace(c, worker=rival_id)  # the rival knows (guesses) everything else
        before = snapshot(conn, run_id)
        assert not complete(rival, forged, {"forged": True})
        assert fail(rival, forged, "forged") == "stale"
        assert ack(rival, [forged], [{"forged": True}]) == ["stale"]
        assert ack(rival, [forged], [None], ["forged"]) == ["stale"]
        assert release(rival, [forged]) == 0
        assert rival.execute(
            "SELECT flowworker.extend_claims('forge', %s, %s, %s, %s, 3600, %s)",
            ([c.run_id], [c.step_slug], [c.task_index], [c.attempt], [rival_id]),
        ).fetchone() == (0,)
        assert snapshot(conn, run_id) == before
        # Without a worker_id nothing is done at all.
        for call, args in (("complete_task", "%s, 'a', 0, %s, '1'::jsonb"),
                           ("fail_task", "%s, 'a', 0, %s, 'x'")):
            with pytest.raises(psycopg.errors.NullValueNotAllowed, match="needs the worker_id"):
                rival.execute(f"SELECT flowworker.{call}({args})", (c.run_id, c.attempt))
        assert snapshot(conn, run_id) == before
        # The holder is unaffected.
        assert complete(holder, c, {"real": True})
    assert tasks(conn, run_id)[0]["output"] == {"real": True}
    assert_invariants(conn, "forge")


def claim_with_grace(conn: psycopg.Connection, grace: int,
                     batch: int = 10) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM flowworker.start_tasks('forge', %s, %s, %s)",
                        (uuid.uuid4(), batch, grace)).fetchall()


@pytest.mark.parametrize(("grace", "batch"), [(-100000, 10), (0, 10), (3601, 10),
                                              (2**31 - 1, 10), (5, 0), (5, -1), (5, 10001)])
def test_absurd_claim_spans_are_refused_and_spend_nothing(
        conn: psycopg.Connection, workers: Logins, grace: int, batch: int) -> None:
    define(conn, "forge", {"a": []})
    run_id = start(conn, "forge")
    with workers.connect("rival") as rival:
        for _ in range(3):
            with pytest.raises(psycopg.errors.InvalidParameterValue,
                               match=r"grace_seconds must be 1\.\.3600 and batch_size 1\.\.10000"):
                claim_with_grace(rival, grace, batch)
    assert run_row(conn, run_id)["status"] == "started"
    assert [t["attempts_count"] for t in tasks(conn, run_id)] == [0]
    (c,) = claim(conn, "forge")
    assert complete(conn, c, Jsonb(1).obj)
    assert run_row(conn, run_id)["status"] == "completed"


def test_the_longest_allowed_claim_span_still_claims(conn: psycopg.Connection) -> None:
    """Bounds that fit together: a week's timeout and an hour's grace do not
    overflow anything a claim computes."""
    conn.execute("SELECT flowworker.create_flow('forge', timeout => 604800, "
                 "base_delay => 86400, max_attempts => 1000)")
    conn.execute("SELECT flowworker.add_step('forge', 'a', start_delay => 0)")
    start(conn, "forge")
    (row,) = claim_with_grace(conn, 3600)
    c = Claim(*row)
    assert c.timeout == 604800
    seconds = conn.execute(
        "SELECT extract(epoch FROM vt - now()) FROM flowworker.q_forge").fetchone()
    assert seconds is not None
    assert abs(float(seconds[0]) - (604800 + 3600)) < 5
    assert vt_of(conn, "forge", c.msg_id) is not None
