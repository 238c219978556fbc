"""The application-side client: runs start inside the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import psycopg
import pytest
from psycopg.rows import dict_row

from flowworker.client import (
    Run,
    cancel_run,
    cancel_run_async,
    get_run,
    get_run_async,
    start_flow,
    start_flow_async,
)
from flowworker.errors import (
    InvalidInputError,
    SchemaError,
    UnknownFlowError,
    UnknownRunError,
)
from tests.support.database import PgServer


@pytest.fixture
async def async_conn(flows_url: str) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(flows_url) as connection:
        yield connection


def committed_run(observer: psycopg.Connection, run_id: uuid.UUID) -> tuple[str, str] | None:
    row = observer.execute(
        "SELECT flow_slug, status FROM flowworker.runs WHERE run_id = %s", (run_id,)).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def committed_tasks(observer: psycopg.Connection, run_id: uuid.UUID) -> list[tuple[str, str]]:
    rows = observer.execute(
        "SELECT step_slug, status FROM flowworker.step_tasks WHERE run_id = %s"
        " ORDER BY step_slug, task_index", (run_id,)).fetchall()
    return [(str(step), str(status)) for step, status in rows]


def test_a_run_started_in_a_rolled_back_transaction_does_not_exist(
        app_conn: psycopg.Connection, observer: psycopg.Connection) -> None:
    with app_conn.transaction(force_rollback=True):
        app_conn.execute("CREATE TABLE app_orders (id int)")
        run = start_flow(app_conn, "orders", {"order_id": 1})
        assert get_run(app_conn, run.run_id) == run  # visible inside the transaction
        assert committed_run(observer, run.run_id) is None  # and only there
    assert committed_run(observer, run.run_id) is None
    assert committed_tasks(observer, run.run_id) == []
    assert observer.execute("SELECT count(*) FROM flowworker.q_orders").fetchone() == (0,)
    assert observer.execute("SELECT to_regclass('app_orders')").fetchone() == (None,)


def test_the_client_never_commits(app_conn: psycopg.Connection,
                                  observer: psycopg.Connection) -> None:
    run = start_flow(app_conn, "orders", {"order_id": 2})
    assert app_conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert committed_run(observer, run.run_id) is None
    app_conn.rollback()
    assert committed_run(observer, run.run_id) is None


def test_a_committed_start_has_a_run_and_a_queued_task(
        app_conn: psycopg.Connection, observer: psycopg.Connection) -> None:
    with app_conn.transaction():
        run = start_flow(app_conn, "orders", {"order_id": 3})
    assert isinstance(run, Run)
    assert (run.flow_slug, run.status, run.input) == ("orders", "started", {"order_id": 3})
    assert (run.output, run.error_message) == (None, None)
    assert isinstance(run.started_at, datetime)
    assert run.completed_at is run.failed_at is run.cancelled_at is None
    assert committed_run(observer, run.run_id) == ("orders", "started")
    assert committed_tasks(observer, run.run_id) == [("validate", "queued")]
    assert observer.execute("SELECT count(*) FROM flowworker.q_orders").fetchone() == (1,)


def test_input_defaults_to_an_empty_object(app_conn: psycopg.Connection) -> None:
    assert start_flow(app_conn, "orders").input == {}


def test_the_callers_row_factory_is_left_alone(flows_url: str) -> None:
    with psycopg.connect(flows_url, row_factory=dict_row) as conn:
        run = start_flow(conn, "orders", {"order_id": 4})
        assert isinstance(run, Run)
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}


def test_start_with_a_run_id_is_idempotent(app_conn: psycopg.Connection,
                                           observer: psycopg.Connection) -> None:
    run_id = uuid.uuid4()
    with app_conn.transaction():
        first = start_flow(app_conn, "orders", {"order_id": 5}, run_id=run_id)
    with app_conn.transaction():
        again = start_flow(app_conn, "orders", {"order_id": 5}, run_id=str(run_id))
    assert first.run_id == again.run_id == run_id
    assert again == first  # the existing run, unchanged
    with pytest.raises(InvalidInputError, match=f"run {run_id} was started with another input"):
        start_flow(app_conn, "orders", {"order_id": 999}, run_id=run_id)
    app_conn.rollback()
    assert committed_tasks(observer, run_id) == [("validate", "queued")]
    assert observer.execute("SELECT count(*) FROM flowworker.q_orders").fetchone() == (1,)


def test_a_run_id_of_another_flow_is_invalid_input(app_conn: psycopg.Connection) -> None:
    run_id = uuid.uuid4()
    start_flow(app_conn, "orders", {"order_id": 6}, run_id=run_id)
    with pytest.raises(InvalidInputError, match=rf"run {run_id} belongs to flow 'orders'"):
        start_flow(app_conn, "fanout", [1], run_id=run_id)


def test_an_unknown_flow_raises_unknown_flow_error(app_conn: psycopg.Connection) -> None:
    with pytest.raises(UnknownFlowError, match=r"^flow 'nope' does not exist$") as info:
        start_flow(app_conn, "nope", {})
    assert isinstance(info.value.__cause__, psycopg.errors.NoDataFound)


@pytest.mark.parametrize("slug", ["Bad-Slug", "", "x" * 49])
def test_an_invalid_slug_is_invalid_input(app_conn: psycopg.Connection, slug: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^invalid flow slug: "):
        start_flow(app_conn, slug, {})


def test_a_root_map_needs_an_array(app_conn: psycopg.Connection) -> None:
    with pytest.raises(InvalidInputError, match=r"must be a JSON array, not object"):
        start_flow(app_conn, "fanout", {"not": "an array"})
    app_conn.rollback()
    run = start_flow(app_conn, "fanout", [10, 20, 30])
    assert run.input == [10, 20, 30]


@pytest.mark.parametrize("bad_input", [{"when": datetime(2024, 1, 1)}, float("nan"), {1j}])
def test_input_that_is_not_json_is_refused_before_the_database(
        app_conn: psycopg.Connection, bad_input: object) -> None:
    with pytest.raises(InvalidInputError, match=r"^flow 'orders': input is not JSON: "):
        start_flow(app_conn, "orders", bad_input)
    # Nothing was sent, so the caller's transaction is still usable.
    assert app_conn.execute("SELECT 1").fetchone() == (1,)


def test_a_malformed_run_id_is_invalid_input(app_conn: psycopg.Connection) -> None:
    with pytest.raises(InvalidInputError, match=r"invalid run_id 'not-a-uuid'"):
        start_flow(app_conn, "orders", {}, run_id="not-a-uuid")
    with pytest.raises(InvalidInputError):
        cancel_run(app_conn, "not-a-uuid")


def test_cancel_run(app_conn: psycopg.Connection, observer: psycopg.Connection) -> None:
    with app_conn.transaction():
        run = start_flow(app_conn, "orders", {"order_id": 7})
    with app_conn.transaction():
        cancelled = cancel_run(app_conn, run.run_id)
    assert (cancelled.run_id, cancelled.status) == (run.run_id, "cancelled")
    assert cancelled.cancelled_at is not None
    assert committed_tasks(observer, run.run_id) == [("validate", "cancelled")]
    # A finished run is returned unchanged.
    assert cancel_run(app_conn, run.run_id) == cancelled


def test_cancel_in_a_rolled_back_transaction_changes_nothing(
        app_conn: psycopg.Connection, observer: psycopg.Connection) -> None:
    with app_conn.transaction():
        run = start_flow(app_conn, "orders", {"order_id": 8})
    with app_conn.transaction(force_rollback=True):
        assert cancel_run(app_conn, run.run_id).status == "cancelled"
    assert committed_run(observer, run.run_id) == ("orders", "started")
    assert committed_tasks(observer, run.run_id) == [("validate", "queued")]


def test_cancel_an_unknown_run_raises_unknown_run_error(app_conn: psycopg.Connection) -> None:
    missing = uuid.uuid4()
    with pytest.raises(UnknownRunError, match=rf"^run {missing} does not exist$"):
        cancel_run(app_conn, missing)


def test_get_run(app_conn: psycopg.Connection) -> None:
    run = start_flow(app_conn, "orders", {"order_id": 9})
    assert get_run(app_conn, run.run_id) == run
    assert get_run(app_conn, str(run.run_id)) == run
    assert get_run(app_conn, uuid.uuid4()) is None


def test_other_database_errors_are_not_wrapped(app_conn: psycopg.Connection) -> None:
    # The caller's transaction is already broken: psycopg's own error comes
    # through, so the caller's handling of it keeps working.
    with pytest.raises(psycopg.errors.DivisionByZero):
        app_conn.execute("SELECT 1 / 0")
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        start_flow(app_conn, "orders", {})


def test_a_database_without_the_schema_is_a_schema_error(pg_server: PgServer) -> None:
    name = f"e_{uuid.uuid4().hex[:16]}"
    pg_server.execute(f"CREATE DATABASE {name}")
    try:
        with psycopg.connect(pg_server.url(name)) as conn:
            with pytest.raises(SchemaError, match=r"run `flowworker migrate`"):
                start_flow(conn, "orders", {})
            conn.rollback()
            with pytest.raises(SchemaError):
                get_run(conn, uuid.uuid4())
    finally:
        pg_server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_async_start_in_a_rolled_back_transaction_leaves_no_run(
        async_conn: psycopg.AsyncConnection, observer: psycopg.Connection) -> None:
    async with async_conn.transaction(force_rollback=True):
        run = await start_flow_async(async_conn, "orders", {"order_id": 10})
        assert await get_run_async(async_conn, run.run_id) == run
    assert committed_run(observer, run.run_id) is None
    assert await get_run_async(async_conn, run.run_id) is None


async def test_async_twins_start_and_cancel(async_conn: psycopg.AsyncConnection,
                                            observer: psycopg.Connection) -> None:
    run_id = uuid.uuid4()
    async with async_conn.transaction():
        run = await start_flow_async(async_conn, "orders", {"order_id": 11}, run_id=run_id)
        again = await start_flow_async(async_conn, "orders", {"order_id": 11}, run_id=run_id)
    assert run == again
    assert (run.run_id, run.status) == (run_id, "started")
    assert committed_tasks(observer, run_id) == [("validate", "queued")]
    async with async_conn.transaction():
        cancelled = await cancel_run_async(async_conn, run_id)
    assert cancelled.status == "cancelled"
    assert committed_run(observer, run_id) == ("orders", "cancelled")


async def test_async_errors_are_mapped(async_conn: psycopg.AsyncConnection) -> None:
    with pytest.raises(UnknownFlowError, match=r"flow 'nope' does not exist"):
        await start_flow_async(async_conn, "nope")
    await async_conn.rollback()
    with pytest.raises(UnknownRunError):
        await cancel_run_async(async_conn, uuid.uuid4())
    await async_conn.rollback()
    with pytest.raises(InvalidInputError):
        await start_flow_async(async_conn, "Not A Slug")
