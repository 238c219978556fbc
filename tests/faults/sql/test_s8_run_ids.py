"""RELIABILITY S8: one enqueuer starts a run with a run id another caller
will use, with another input. A start with a run id is idempotent only for
the same flow and the same input: the second caller gets an error naming
the run, never the first caller's run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.faults.sql.conftest import Logins, login_roles
from tests.sql.helpers import define, run_row
from tests.support.database import PgServer


@pytest.fixture
def enqueuers(pg_server: PgServer, db_url: str) -> Iterator[Logins]:
    with login_roles(pg_server, db_url, {"first": "enqueuer", "second": "enqueuer"}) as made:
        yield made


def start_as(conn: psycopg.Connection, run_id: uuid.UUID, flow_input: object) -> dict[str, object]:
    row = conn.execute("SELECT run_id, input FROM flowworker.start_flow('pay', %s, %s)",
                       (Jsonb(flow_input), run_id)).fetchone()
    assert row is not None
    return {"run_id": row[0], "input": row[1]}


def test_a_run_id_taken_first_with_another_input_is_an_error(
        conn: psycopg.Connection, enqueuers: Logins) -> None:
    define(conn, "pay", {"charge": []})
    run_id = uuid.uuid4()
    with enqueuers.connect("first") as first, enqueuers.connect("second") as second:
        assert start_as(first, run_id, {"to": "mallory", "amount": 1}) == {
            "run_id": run_id, "input": {"to": "mallory", "amount": 1}}
        with pytest.raises(psycopg.errors.UniqueViolation,
                           match=f"run {run_id} was started with another input"):
            start_as(second, run_id, {"to": "alice", "amount": 100})
        # The same start again is still idempotent, for either caller.
        assert start_as(second, run_id, {"amount": 1, "to": "mallory"})["run_id"] == run_id
    assert run_row(conn, run_id)["input"] == {"to": "mallory", "amount": 1}
    assert conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (1,)
