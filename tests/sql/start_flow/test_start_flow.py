"""start_flow: idempotent run ids, unknown flows, start delays."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.sql.helpers import assert_invariants, claim, define, run_row, start, tasks, visible_in


def test_same_run_id_returns_the_same_run(conn: psycopg.Connection) -> None:
    define(conn, "idem", {"a": [], "b": ["a"]})
    run_id = uuid.uuid4()
    assert start(conn, "idem", {"v": 1}, run_id) == run_id
    first = run_row(conn, run_id)
    assert start(conn, "idem", {"v": 1}, run_id) == run_id
    assert run_row(conn, run_id) == first
    assert len(tasks(conn, run_id)) == 1
    assert conn.execute("SELECT count(*) FROM flowworker.q_idem").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM flowworker.step_states").fetchone() == (2,)
    (c,) = claim(conn, "idem")
    assert start(conn, "idem", {"v": 1}, run_id) == run_id
    assert claim(conn, "idem") == []
    assert c.input == {"v": 1}
    assert_invariants(conn, "idem")


def test_a_known_run_id_with_another_input_is_not_that_run(conn: psycopg.Connection) -> None:
    """Whoever learns a run id first cannot hand the next caller their run:
    the same id with another input is an error naming the run."""
    define(conn, "idem", {"a": []})
    run_id = uuid.uuid4()
    start(conn, "idem", {"v": 1}, run_id)
    first = run_row(conn, run_id)
    with pytest.raises(psycopg.errors.UniqueViolation,
                       match=f"run {run_id} was started with another input"):
        start(conn, "idem", {"v": 2}, run_id)
    assert run_row(conn, run_id) == first
    assert conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (1,)


def test_run_id_of_another_flow_is_an_error(conn: psycopg.Connection) -> None:
    define(conn, "one", {"a": []})
    define(conn, "two", {"a": []})
    run_id = start(conn, "one")
    with pytest.raises(psycopg.errors.UniqueViolation,
                       match=f"run {run_id} belongs to flow 'one', not 'two'"):
        start(conn, "two", {}, run_id)
    assert conn.execute("SELECT count(*) FROM flowworker.q_two").fetchone() == (0,)
    assert_invariants(conn, "one")



def test_unknown_flow_is_named(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.NoDataFound, match="flow 'nowhere' does not exist"):
        start(conn, "nowhere")
    define(conn, "known", {"a": []})
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid flow slug"):
        start(conn, "Known")
    assert_invariants(conn, "known")



def test_start_delay_delays_the_first_message(conn: psycopg.Connection) -> None:
    define(conn, "later", {"a": [], "b": ["a"]})
    conn.execute("SELECT flowworker.add_step('later', 'a', start_delay => 30)")
    with conn.transaction():
        run_id = start(conn, "later")
        (task,) = tasks(conn, run_id)
        assert visible_in(conn, "later", task["message_id"]) == 30
    assert claim(conn, "later") == []
    assert_invariants(conn, "later")



def test_root_steps_start_together_and_run_without_steps_completes(
        conn: psycopg.Connection) -> None:
    define(conn, "roots", {"a": [], "b": [], "c": ["a", "b"]})
    run_id = start(conn, "roots", 7)
    assert sorted((c.step_slug, c.input) for c in claim(conn, "roots")) == [("a", 7), ("b", 7)]
    assert run_row(conn, run_id)["remaining_steps"] == 3
    define(conn, "empty", {})
    empty = run_row(conn, start(conn, "empty"))
    assert (empty["status"], empty["output"]) == ("completed", {})
    assert_invariants(conn, "roots")



def test_null_input_is_refused(conn: psycopg.Connection) -> None:
    define(conn, "nn", {"a": []})
    with pytest.raises(psycopg.errors.NullValueNotAllowed):
        conn.execute("SELECT flowworker.start_flow('nn', NULL)")
    assert_invariants(conn, "nn")
