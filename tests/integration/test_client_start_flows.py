"""client.start_flows: a batch of runs inside the caller's transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

import psycopg
import pytest
from psycopg.rows import dict_row

from flowworker.client import Run, get_run, start_flow, start_flows
from flowworker.errors import InvalidInputError, UnknownFlowError


def committed_runs(observer: psycopg.Connection) -> int:
    row = observer.execute("SELECT count(*) FROM flowworker.runs").fetchone()
    assert row is not None
    count: int = row[0]
    return count


def committed_tasks(observer: psycopg.Connection, run_id: uuid.UUID) -> list[tuple[str, str]]:
    rows = observer.execute(
        "SELECT step_slug, status FROM flowworker.step_tasks WHERE run_id = %s"
        " ORDER BY step_slug, task_index", (run_id,)).fetchall()
    return [(str(step), str(status)) for step, status in rows]


def queued(observer: psycopg.Connection, flow: str) -> int:
    row = observer.execute(f"SELECT count(*) FROM flowworker.q_{flow}").fetchone()
    assert row is not None
    count: int = row[0]
    return count


def test_runs_come_back_in_input_order(app_conn: psycopg.Connection,
                                       observer: psycopg.Connection) -> None:
    inputs = [{"order_id": i} for i in range(12)]
    with app_conn.transaction():
        runs = start_flows(app_conn, "orders", inputs)
    assert all(isinstance(r, Run) for r in runs)
    assert [r.input for r in runs] == inputs
    assert len({r.run_id for r in runs}) == 12
    for r in runs:
        assert (r.flow_slug, r.status, r.output, r.error_message) == (
            "orders", "started", None, None)
        assert isinstance(r.started_at, datetime)
        assert r.completed_at is r.failed_at is r.cancelled_at is None
        assert get_run(app_conn, r.run_id) == r
        assert committed_tasks(observer, r.run_id) == [("validate", "queued")]
    assert committed_runs(observer) == 12
    assert queued(observer, "orders") == 12


def test_a_root_map_batch_queues_a_task_per_element(app_conn: psycopg.Connection,
                                                    observer: psycopg.Connection) -> None:
    with app_conn.transaction():
        runs = start_flows(app_conn, "fanout", [[1, 2, 3], [], [4]])
    assert [(r.input, r.status) for r in runs] == [
        ([1, 2, 3], "started"), ([], "completed"), ([4], "started")]
    assert runs[1].output == {"each": []}
    assert [len(committed_tasks(observer, r.run_id)) for r in runs] == [3, 0, 1]
    assert queued(observer, "fanout") == 4


def test_none_means_an_empty_object_as_in_start_flow(app_conn: psycopg.Connection) -> None:
    runs = start_flows(app_conn, "orders", [None, {"order_id": 1}])
    assert [r.input for r in runs] == [{}, {"order_id": 1}]


def test_no_inputs_start_no_runs(app_conn: psycopg.Connection) -> None:
    assert start_flows(app_conn, "orders", []) == []
    assert start_flows(app_conn, "orders", [], run_ids=[]) == []
    assert app_conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (0,)


def test_a_rolled_back_transaction_leaves_nothing(app_conn: psycopg.Connection,
                                                  observer: psycopg.Connection) -> None:
    with app_conn.transaction(force_rollback=True):
        app_conn.execute("CREATE TABLE app_orders (id int)")
        runs = start_flows(app_conn, "orders", [{"order_id": 1}, {"order_id": 2}])
        assert [get_run(app_conn, r.run_id) for r in runs] == runs  # visible inside
        assert committed_runs(observer) == 0  # and only there
    assert [get_run(app_conn, r.run_id) for r in runs] == [None, None]
    assert committed_runs(observer) == 0
    assert all(committed_tasks(observer, r.run_id) == [] for r in runs)
    assert queued(observer, "orders") == 0
    assert observer.execute("SELECT to_regclass('app_orders')").fetchone() == (None,)


def test_the_client_never_commits(app_conn: psycopg.Connection,
                                  observer: psycopg.Connection) -> None:
    start_flows(app_conn, "orders", [{"order_id": 1}])
    assert app_conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert committed_runs(observer) == 0
    app_conn.rollback()
    assert committed_runs(observer) == 0


def test_the_callers_row_factory_is_left_alone(flows_url: str) -> None:
    with psycopg.connect(flows_url, row_factory=dict_row) as conn:
        runs = start_flows(conn, "orders", [{"order_id": 1}, {"order_id": 2}])
        assert [type(r) for r in runs] == [Run, Run]
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}


def test_run_ids_make_the_batch_idempotent(app_conn: psycopg.Connection,
                                           observer: psycopg.Connection) -> None:
    given = [uuid.uuid4(), uuid.uuid4()]
    with app_conn.transaction():
        first = start_flows(app_conn, "orders", [{"order_id": 1}, {"order_id": 2}],
                            run_ids=[given[0], str(given[1])])
    assert [r.run_id for r in first] == given
    fresh = uuid.uuid4()
    with app_conn.transaction():
        again = start_flows(app_conn, "orders",
                            [{"order_id": 2}, {"order_id": 3}, {"order_id": 1}],
                            run_ids=[str(given[1]), fresh, given[0]])
    assert again[0] == first[1]  # the existing runs, unchanged
    assert again[2] == first[0]
    assert (again[1].run_id, again[1].input) == (fresh, {"order_id": 3})
    assert committed_runs(observer) == 3
    for run_id in (*given, fresh):
        assert committed_tasks(observer, run_id) == [("validate", "queued")]
    assert queued(observer, "orders") == 3
    # start_flow sees the same runs.
    assert start_flow(app_conn, "orders", {"order_id": 1}, run_id=given[0]) == first[0]


def test_an_unknown_flow_raises_unknown_flow_error(app_conn: psycopg.Connection) -> None:
    with pytest.raises(UnknownFlowError, match=r"^flow 'nope' does not exist$") as info:
        start_flows(app_conn, "nope", [{}, {}])
    assert isinstance(info.value.__cause__, psycopg.errors.NoDataFound)


@pytest.mark.parametrize("bad_input", [{"when": datetime(2024, 1, 1)}, float("nan"), {1j}])
def test_input_that_is_not_json_is_refused_before_the_database(
        app_conn: psycopg.Connection, observer: psycopg.Connection, bad_input: object) -> None:
    with pytest.raises(InvalidInputError, match=r"^flow 'orders': input is not JSON: "):
        start_flows(app_conn, "orders", [{"order_id": 1}, bad_input])
    # Nothing was sent, so the caller's transaction is still usable, and empty.
    assert app_conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (0,)
    app_conn.commit()
    assert committed_runs(observer) == 0


@pytest.mark.parametrize(("n_inputs", "n_ids"), [(2, 1), (1, 3), (2, 0)])
def test_run_ids_of_another_length_are_refused_before_the_database(
        app_conn: psycopg.Connection, n_inputs: int, n_ids: int) -> None:
    with pytest.raises(InvalidInputError,
                       match=rf"^flow 'orders': {n_inputs} inputs and {n_ids} run ids; "
                             r"give one run id per input$"):
        start_flows(app_conn, "orders", [{"order_id": i} for i in range(n_inputs)],
                    run_ids=[uuid.uuid4() for _ in range(n_ids)])
    # The database never saw it: a refusal there would have aborted the transaction.
    assert app_conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (0,)


def test_a_root_map_needs_every_input_to_be_an_array(app_conn: psycopg.Connection,
                                                     observer: psycopg.Connection) -> None:
    with pytest.raises(InvalidInputError,
                       match=r"^flow 'fanout' maps step 'each' over its input, which must be"
                             r" a JSON array, not object$") as info:
        start_flows(app_conn, "fanout", [[1], [2, 3], {"not": "an array"}])
    assert isinstance(info.value.__cause__, psycopg.errors.InvalidParameterValue)
    app_conn.rollback()
    with pytest.raises(InvalidInputError, match=r"not number$"):
        start_flows(app_conn, "fanout", [7, [1]])
    app_conn.rollback()
    assert committed_runs(observer) == 0
    runs = start_flows(app_conn, "fanout", [[1], [2, 3]])
    assert [r.input for r in runs] == [[1], [2, 3]]


def test_a_run_id_of_another_flow_is_invalid_input(app_conn: psycopg.Connection) -> None:
    theirs = uuid.uuid4()
    start_flow(app_conn, "orders", {"order_id": 6}, run_id=theirs)
    with pytest.raises(InvalidInputError,
                       match=rf"^run {theirs} belongs to flow 'orders', not 'fanout'$") as info:
        start_flows(app_conn, "fanout", [[1], [2]], run_ids=[uuid.uuid4(), theirs])
    assert isinstance(info.value.__cause__, psycopg.errors.UniqueViolation)


def test_a_malformed_run_id_is_invalid_input(app_conn: psycopg.Connection) -> None:
    with pytest.raises(InvalidInputError, match=r"invalid run_id 'not-a-uuid'"):
        start_flows(app_conn, "orders", [{}, {}], run_ids=[uuid.uuid4(), "not-a-uuid"])
    assert app_conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (0,)
