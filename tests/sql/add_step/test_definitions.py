"""create_flow and add_step are idempotent; a changed shape is an error."""

from __future__ import annotations

import psycopg
import pytest

from tests.sql.helpers import define, start


def steps_and_deps(conn: psycopg.Connection) -> tuple[object, ...]:
    return (
        conn.execute("SELECT flow_slug, step_slug, step_type, step_index, deps_count, "
                     "max_attempts, base_delay, timeout, start_delay "
                     "FROM flowworker.steps ORDER BY 1, 2").fetchall(),
        conn.execute("SELECT * FROM flowworker.deps ORDER BY 1, 2, 3").fetchall(),
        conn.execute("SELECT flow_slug, max_attempts, base_delay, timeout "
                     "FROM flowworker.flows").fetchall(),
    )


def test_reapplying_a_definition_is_a_noop(conn: psycopg.Connection) -> None:
    shape = {"a": [], "b": ["a"], "c": ["a"], "d": ["c", "b"]}
    define(conn, "same", shape, maps=("b",), max_attempts=4)
    before = steps_and_deps(conn)
    define(conn, "same", shape, maps=("b",), max_attempts=4)
    conn.execute("SELECT flowworker.add_step('same', 'd', deps => '{b,c,b}')")
    assert steps_and_deps(conn) == before
    start(conn, "same")
    define(conn, "same", shape, maps=("b",), max_attempts=4)
    assert steps_and_deps(conn) == before


def test_options_may_change_in_place(conn: psycopg.Connection) -> None:
    define(conn, "opt", {"a": []})
    start(conn, "opt")
    conn.execute("SELECT flowworker.create_flow('opt', max_attempts => 9)")
    conn.execute("SELECT flowworker.add_step('opt', 'a', timeout => 5)")
    assert conn.execute("SELECT f.max_attempts, s.timeout FROM flowworker.flows f "
                        "JOIN flowworker.steps s USING (flow_slug)").fetchone() == (9, 5)


@pytest.mark.parametrize(("call", "message"), [
    ("add_step('sh', 'b', deps => '{}')",
     r"flow 'sh' changed shape: step 'b' depends on \{a\} in the database, \{\} in the definition"),
    ("add_step('sh', 'c', deps => '{a,b}')",
     r"step 'c' depends on \{a\} in the database, \{a,b\} in the definition"),
    ("add_step('sh', 'b', deps => '{a}', step_type => 'map')",
     "flow 'sh' changed shape: step 'b' is single in the database, map in the definition"),
    ("add_step('sh', 'a', step_type => 'single')",
     "step 'a' is map in the database, single in the definition"),
])
def test_changed_shape_is_an_error(conn: psycopg.Connection, call: str, message: str) -> None:
    define(conn, "sh", {"a": [], "b": ["a"], "c": ["a"]}, maps=("a",))
    before = steps_and_deps(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute(f"SELECT flowworker.{call}")
    assert steps_and_deps(conn) == before


def test_new_step_in_a_flow_with_runs_is_refused(conn: psycopg.Connection) -> None:
    define(conn, "ran", {"a": []})
    start(conn, "ran")
    before = steps_and_deps(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue,
                       match="flow 'ran' changed shape: step 'b' is new, but the flow already"):
        conn.execute("SELECT flowworker.add_step('ran', 'b', deps => '{a}')")
    assert steps_and_deps(conn) == before


def test_map_step_with_two_deps_is_refused(conn: psycopg.Connection) -> None:
    define(conn, "mm", {"a": [], "b": []})
    with pytest.raises(psycopg.errors.InvalidParameterValue,
                       match=r"map step mm\.each has 2 deps; a map step has at most one"):
        conn.execute("SELECT flowworker.add_step('mm', 'each', deps => '{a,b}', "
                     "step_type => 'map')")
    assert conn.execute("SELECT count(*) FROM flowworker.steps").fetchone() == (2,)


def test_unknown_dependency_flow_and_type_are_refused(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.NoDataFound, match="flow 'ghost' does not exist"):
        conn.execute("SELECT flowworker.add_step('ghost', 'a')")
    define(conn, "u", {"a": []})
    with pytest.raises(psycopg.errors.InvalidParameterValue,
                       match=r"step u\.b depends on unknown step 'zz'"):
        conn.execute("SELECT flowworker.add_step('u', 'b', deps => '{zz}')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="single, map or wait, not loop"):
        conn.execute("SELECT flowworker.add_step('u', 'b', step_type => 'loop')")
    with pytest.raises(psycopg.errors.InvalidParameterValue,
                       match=r"step u\.b: max_attempts must be between 1 and 1000, not 0"):
        conn.execute("SELECT flowworker.add_step('u', 'b', max_attempts => 0)")
    assert conn.execute("SELECT count(*) FROM flowworker.steps").fetchone() == (1,)
