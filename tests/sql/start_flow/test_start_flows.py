"""start_flows: a batch of runs in one statement, in input order, all or none."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.sql.helpers import (
    assert_invariants,
    claim,
    complete,
    define,
    queue_table,
    run_row,
    start,
    step_row,
    step_statuses,
    tasks,
    visible_in,
)

# An SQL NULL in the inputs array (None itself is sent as the JSON null).
SQL_NULL = object()


def start_many(conn: psycopg.Connection, flow: str, inputs: list[Any],
               run_ids: list[uuid.UUID | None] | None = None) -> list[dict[str, Any]]:
    """flowworker.start_flows; the rows it returns, in its order."""
    array = [None if i is SQL_NULL else Jsonb(i) for i in inputs]
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM flowworker.start_flows(%s, %s::jsonb[], %s::uuid[])",
            (flow, array, run_ids),
        ).fetchall()


def ids(rows: list[dict[str, Any]]) -> list[uuid.UUID]:
    return [r["run_id"] for r in rows]


def messages_of(conn: psycopg.Connection, flow: str, run_id: uuid.UUID) -> list[tuple[str, int]]:
    """(step_slug, task_index) of every queued message of a run, sorted."""
    rows = conn.execute(
        sql.SQL("SELECT message->>'step_slug', (message->>'task_index')::int FROM {}"
                " WHERE message->>'run_id' = %s ORDER BY 1, 2").format(queue_table(flow)),
        (str(run_id),),
    ).fetchall()
    return [(str(s), int(i)) for s, i in rows]


def shape(conn: psycopg.Connection, flow: str, run_id: uuid.UUID) -> dict[str, Any]:
    """Everything starting a run wrote for it, without its id and timestamps."""
    run = run_row(conn, run_id)
    with conn.cursor(row_factory=dict_row) as cur:
        states = cur.execute(
            "SELECT step_slug, status, remaining_deps, remaining_tasks, initial_tasks, output"
            " FROM flowworker.step_states WHERE run_id = %s ORDER BY step_slug", (run_id,),
        ).fetchall()
    return {
        "run": {k: run[k] for k in ("flow_slug", "status", "input", "output",
                                    "remaining_steps", "error_message")},
        "steps": states,
        "tasks": [(t["step_slug"], t["task_index"], t["status"], t["attempts_count"])
                  for t in tasks(conn, run_id)],
        "messages": messages_of(conn, flow, run_id),
    }


def snapshot(conn: psycopg.Connection, flows: tuple[str, ...]) -> dict[str, Any]:
    """Row counts of every table a start writes, and each flow's message
    sequence (not rolled back: it shows whether anything was queued at all)."""
    counts: dict[str, Any] = {}
    for table in ("runs", "step_states", "step_tasks"):
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("flowworker", table))
        counts[table] = conn.execute(query).fetchone()
    for flow in flows:
        counts[f"q_{flow}"] = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(queue_table(flow))).fetchone()
        counts[f"q_{flow}$seq"] = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(
                sql.Identifier("flowworker", f"q_{flow}$seq"))).fetchone()
    return counts


def queue_count(conn: psycopg.Connection, flow: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(queue_table(flow))).fetchone()
    assert row is not None
    count: int = row[0]
    return count


# --- many inputs ------------------------------------------------------------


def test_a_batch_starts_each_run_as_start_flow_does(conn: psycopg.Connection) -> None:
    # Two roots (a map over the input and a single step) and a join.
    define(conn, "mix", {"each": [], "one": [], "join": ["each", "one"]}, maps=("each",))
    inputs: list[Any] = [[1, 2, 3], [], [7], [4, 5]]
    singly = [start(conn, "mix", i) for i in inputs]
    rows = start_many(conn, "mix", inputs)

    assert len(rows) == len(inputs)
    assert len(set(ids(rows)) | set(singly)) == 2 * len(inputs)
    assert [r["input"] for r in rows] == inputs
    for one, batched in zip(singly, ids(rows), strict=True):
        assert shape(conn, "mix", batched) == shape(conn, "mix", one)
    # And what that is, spelled out: a task and a message per element of the
    # map plus one for the single step; an empty map is complete at once.
    assert [len(tasks(conn, r)) for r in ids(rows)] == [4, 1, 2, 3]
    assert [len(messages_of(conn, "mix", r)) for r in ids(rows)] == [4, 1, 2, 3]
    assert [step_statuses(conn, r)["each"] for r in ids(rows)] == [
        "started", "completed", "started", "started"]
    assert {step_statuses(conn, r)["join"] for r in ids(rows)} == {"created"}
    assert [run_row(conn, r)["remaining_steps"] for r in ids(rows)] == [3, 2, 3, 3]
    assert queue_count(conn, "mix") == 2 * 10
    # The returned rows are the rows as they stand after the start.
    assert rows == [run_row(conn, r) for r in ids(rows)]

    # Each message reaches its own run's input.
    claims = claim(conn, "mix", batch_size=100)
    assert len(claims) == 20
    by_run = {r["run_id"]: r["input"] for r in rows} | {
        r: run_row(conn, r)["input"] for r in singly}
    for c in claims:
        # A root single step's input is the flow input; a map task gets it beside its element.
        assert c.flow_input == (by_run[c.run_id] if c.step_slug == "each" else None)
        assert c.input == (by_run[c.run_id][c.task_index] if c.step_slug == "each"
                           else by_run[c.run_id])
    assert_invariants(conn, "mix")


def test_runs_come_back_in_input_order(conn: psycopg.Connection) -> None:
    define(conn, "order", {"a": []})
    inputs = [{"i": i} for i in range(30)]
    rows = start_many(conn, "order", inputs)
    assert [r["input"] for r in rows] == inputs
    assert len(set(ids(rows))) == 30
    # Given run ids, in an order that is neither sorted nor random.
    given = sorted((uuid.uuid4() for _ in range(30)), reverse=True)
    given = given[::2] + given[1::2]
    rows = start_many(conn, "order", [{"j": j} for j in range(30)], list(given))
    assert ids(rows) == given
    assert [r["input"] for r in rows] == [{"j": j} for j in range(30)]
    assert all(run_row(conn, g)["input"] == {"j": j} for j, g in enumerate(given))
    assert_invariants(conn, "order")


def test_no_inputs_start_no_runs(conn: psycopg.Connection) -> None:
    define(conn, "zero", {"a": []})
    before = snapshot(conn, ("zero",))
    assert start_many(conn, "zero", []) == []
    assert start_many(conn, "zero", [], []) == []
    assert snapshot(conn, ("zero",)) == before


def test_a_flow_without_steps_completes_every_run(conn: psycopg.Connection) -> None:
    define(conn, "none", {})
    rows = start_many(conn, "none", [{}, {"a": 1}, [1]])
    assert [(r["status"], r["output"], r["input"]) for r in rows] == [
        ("completed", {}, {}), ("completed", {}, {"a": 1}), ("completed", {}, [1])]
    assert all(r["completed_at"] is not None for r in rows)
    assert conn.execute("SELECT count(*) FROM flowworker.step_states").fetchone() == (0,)


# --- run ids ---------------------------------------------------------------


def test_repeating_a_call_with_run_ids_returns_the_same_runs(conn: psycopg.Connection) -> None:
    define(conn, "idem", {"a": [], "b": ["a"]})
    given = [uuid.uuid4() for _ in range(3)]
    first = start_many(conn, "idem", [{"v": 1}, {"v": 2}, {"v": 3}], list(given))
    assert ids(first) == given
    before = snapshot(conn, ("idem",))
    assert before["runs"] == (3,)
    assert before["step_tasks"] == (3,)

    again = start_many(conn, "idem", [{"v": 1}, {"v": 2}, {"v": 3}], list(given))
    assert again == first  # the existing runs, unchanged
    assert snapshot(conn, ("idem",)) == before
    with pytest.raises(psycopg.errors.UniqueViolation, match="was started with another input"):
        start_many(conn, "idem", [{"v": 1}, {"v": 20}, {"v": 3}], list(given))
    assert snapshot(conn, ("idem",)) == before

    # After a task was claimed, a retry neither resets it nor queues another.
    (c, *_) = claim(conn, "idem", batch_size=1)
    claimed = run_row(conn, c.run_id)
    repeated = start_many(conn, "idem", [{"v": 1}, {"v": 2}, {"v": 3}], list(given))
    assert repeated[given.index(c.run_id)] == claimed
    assert [t["attempts_count"] for t in tasks(conn, c.run_id)] == [1]
    assert len(claim(conn, "idem")) == 2  # the two never claimed, nothing new
    assert claim(conn, "idem") == []
    assert_invariants(conn, "idem")


def test_existing_and_new_run_ids_in_one_call(conn: psycopg.Connection) -> None:
    define(conn, "mixed", {"a": [], "b": ["a"]})
    old = [uuid.uuid4(), uuid.uuid4()]
    first = start_many(conn, "mixed", [{"old": 0}, {"old": 1}], list(old))
    new = [uuid.uuid4(), uuid.uuid4()]
    rows = start_many(conn, "mixed",
                      [{"new": 0}, {"old": 0}, {"new": 1}, {"old": 1}, {"new": 2}],
                      [new[0], old[0], new[1], old[1], None])

    assert rows[1] == first[0]
    assert rows[3] == first[1]
    assert ids(rows)[:4] == [new[0], old[0], new[1], old[1]]
    assert rows[4]["run_id"] not in {*old, *new}  # a NULL run id is a fresh run
    assert [r["input"] for r in rows] == [{"new": 0}, {"old": 0}, {"new": 1}, {"old": 1},
                                         {"new": 2}]
    assert conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (5,)
    assert conn.execute("SELECT count(*) FROM flowworker.step_states").fetchone() == (10,)
    for r in ids(rows):
        assert [(t["step_slug"], t["task_index"]) for t in tasks(conn, r)] == [("a", 0)]
        assert messages_of(conn, "mixed", r) == [("a", 0)]
    assert queue_count(conn, "mixed") == 5
    assert_invariants(conn, "mixed")


def test_a_run_id_twice_in_one_call_is_one_run(conn: psycopg.Connection) -> None:
    define(conn, "twice", {"a": [], "b": ["a"]})
    x, y = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(psycopg.errors.UniqueViolation,
                       match=f"run {x} was started with another input"):
        start_many(conn, "twice", [{"v": 1}, {"v": 2}, {"v": 3}], [x, y, x])
    assert conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (0,)
    rows = start_many(conn, "twice", [{"v": 1}, {"v": 2}, {"v": 1}], [x, y, x])
    assert ids(rows) == [x, y, x]
    assert rows[0] == rows[2]
    # The first occurrence starts the run; the second finds it started.
    assert [r["input"] for r in rows] == [{"v": 1}, {"v": 2}, {"v": 1}]
    assert conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (2,)
    assert conn.execute("SELECT count(*) FROM flowworker.step_states").fetchone() == (4,)
    assert [len(tasks(conn, r)) for r in (x, y)] == [1, 1]
    assert queue_count(conn, "twice") == 2
    assert sorted(c.run_id for c in claim(conn, "twice")) == sorted([x, y])
    assert_invariants(conn, "twice")


# --- refusals: a bad input starts none ---------------------------------------


def assert_refused(conn: psycopg.Connection, flows: tuple[str, ...],
                   error: type[psycopg.Error], match: str, flow: str, inputs: list[Any],
                   run_ids: list[uuid.UUID | None] | None = None) -> None:
    before = snapshot(conn, flows)
    with pytest.raises(error, match=match):
        start_many(conn, flow, inputs, run_ids)
    assert snapshot(conn, flows) == before


def test_unknown_flow_starts_none(conn: psycopg.Connection) -> None:
    define(conn, "known", {"a": []})
    start(conn, "known")
    assert_refused(conn, ("known",), psycopg.errors.NoDataFound,
                   "flow 'nowhere' does not exist", "nowhere", [{}, {}])
    assert_refused(conn, ("known",), psycopg.errors.InvalidParameterValue,
                   "invalid flow slug", "Known", [{}])
    assert_invariants(conn, "known")


def test_a_null_input_starts_none(conn: psycopg.Connection) -> None:
    define(conn, "nn", {"a": []})
    start(conn, "nn")
    assert_refused(conn, ("nn",), psycopg.errors.NullValueNotAllowed,
                   "flow 'nn' input must not be NULL", "nn", [{"a": 1}, {"b": 2}, SQL_NULL])
    assert_refused(conn, ("nn",), psycopg.errors.NullValueNotAllowed,
                   "input must not be NULL", "nn", [SQL_NULL, {}])
    before = snapshot(conn, ("nn",))
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="input must not be NULL"):
        conn.execute("SELECT * FROM flowworker.start_flows('nn', NULL)")
    assert snapshot(conn, ("nn",)) == before
    # The JSON null is a value, not a missing input.
    (row,) = start_many(conn, "nn", [None])
    assert row["input"] is None
    assert row["status"] == "started"
    assert_invariants(conn, "nn")


def test_run_ids_of_another_length_start_none(conn: psycopg.Connection) -> None:
    define(conn, "len", {"a": []})
    assert_refused(conn, ("len",), psycopg.errors.InvalidParameterValue,
                   "start_flows got 3 inputs and 2 run ids", "len", [{}, {}, {}],
                   [uuid.uuid4(), uuid.uuid4()])
    assert_refused(conn, ("len",), psycopg.errors.InvalidParameterValue,
                   "start_flows got 1 inputs and 2 run ids", "len", [{}],
                   [uuid.uuid4(), uuid.uuid4()])
    assert_refused(conn, ("len",), psycopg.errors.InvalidParameterValue,
                   "start_flows got 2 inputs and 0 run ids", "len", [{}, {}], [])


def test_an_input_over_the_limit_starts_none(conn: psycopg.Connection) -> None:
    define(conn, "big", {"a": []})
    conn.execute("UPDATE flowworker.config SET value = 200 WHERE name = 'max_input_bytes'")
    small = {"pad": "x" * 100}
    size = conn.execute("SELECT pg_column_size(%s::jsonb)", (Jsonb(small),)).fetchone()
    assert size is not None
    assert 100 < size[0] < 200
    assert_refused(conn, ("big",), psycopg.errors.ProgramLimitExceeded,
                   r"the input of flow 'big' is \d+ bytes, over the limit of 200 bytes",
                   "big", [small, small, {"pad": "x" * 300}])
    # The limit is on each input, not on the batch.
    rows = start_many(conn, "big", [small] * 10)
    assert len(rows) == 10
    assert queue_count(conn, "big") == 10
    assert_invariants(conn, "big")


def test_a_root_map_needs_every_input_to_be_an_array(conn: psycopg.Connection) -> None:
    # The map is not the first step: every root map step is checked.
    define(conn, "fan", {"one": [], "each": [], "after": ["each"]}, maps=("each",))
    start(conn, "fan", [1])
    for bad, kind in (({"x": 1}, "object"), (5, "number"), ("s", "string"), (None, "null")):
        assert_refused(conn, ("fan",), psycopg.errors.InvalidParameterValue,
                       f"flow 'fan' maps step 'each' over its input, which must be a JSON array,"
                       f" not {kind}", "fan", [[1], [2, 3], bad])
    assert len(start_many(conn, "fan", [[1], [2, 3], []])) == 3
    # A flow whose map is not a root takes any input.
    define(conn, "later", {"src": [], "each": ["src"]}, maps=("each",))
    assert [r["input"] for r in start_many(conn, "later", [{"x": 1}, 5])] == [{"x": 1}, 5]
    assert_invariants(conn, "fan")
    assert_invariants(conn, "later")


def test_a_run_id_of_another_flow_starts_none(conn: psycopg.Connection) -> None:
    define(conn, "one", {"a": []})
    define(conn, "two", {"a": []})
    theirs = start(conn, "one", {"mine": True})
    (ours,) = ids(start_many(conn, "two", [{}], [uuid.uuid4()]))
    theirs_before = run_row(conn, theirs)
    assert_refused(conn, ("one", "two"), psycopg.errors.UniqueViolation,
                   f"run {theirs} belongs to flow 'one', not 'two'", "two",
                   [{}, {}, {}], [uuid.uuid4(), ours, theirs])
    assert run_row(conn, theirs) == theirs_before
    assert_invariants(conn, "one")
    assert_invariants(conn, "two")


def test_a_run_id_another_flow_commits_meanwhile_is_refused(
        db_url: str, conn: psycopg.Connection) -> None:
    # start_flows checks run ids of other flows before its insert; a run of
    # another flow committed between that check and the insert must still be
    # refused (start_flow refuses it), not returned as a run of this flow.
    define(conn, "one", {"a": []})
    define(conn, "two", {"a": []})
    run_id = uuid.uuid4()
    outcome: dict[str, Any] = {}
    with psycopg.connect(db_url) as theirs, psycopg.connect(db_url, autocommit=True) as ours:
        theirs.execute("SELECT flowworker.start_flow('one', '{}', %s)", (run_id,))
        pid = ours.info.backend_pid

        def second() -> None:
            try:
                outcome["rows"] = start_many(ours, "two", [{"two": True}], [run_id])
            except psycopg.Error as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 30
        while conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                           (pid,)).fetchone() != ("Lock",):
            assert time.monotonic() < deadline, "start_flows never waited for the other start"
            time.sleep(0.01)
        theirs.commit()
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert [(r["run_id"], r["flow_slug"]) for r in outcome.get("rows", [])] == []
    assert isinstance(outcome.get("error"), psycopg.errors.UniqueViolation)
    assert run_row(conn, run_id)["flow_slug"] == "one"
    assert queue_count(conn, "two") == 0


def test_a_refused_batch_leaves_the_callers_transaction_as_it_was(
        conn: psycopg.Connection) -> None:
    define(conn, "tx", {"each": []}, maps=("each",))
    with conn.transaction():
        kept = ids(start_many(conn, "tx", [[1], [2]]))
        before = snapshot(conn, ("tx",))
        with pytest.raises(psycopg.errors.InvalidParameterValue), conn.transaction():
            start_many(conn, "tx", [[3], {"no": "array"}])
        assert snapshot(conn, ("tx",)) == before
    assert conn.execute("SELECT array_agg(run_id ORDER BY input) FROM flowworker.runs"
                        ).fetchone() == (kept,)
    assert_invariants(conn, "tx")


# --- what starts --------------------------------------------------------------


def test_an_empty_array_completes_its_map_step_at_once(conn: psycopg.Connection) -> None:
    define(conn, "em", {"each": [], "after": ["each"]}, maps=("each",))
    empty1, full, empty2 = ids(start_many(conn, "em", [[], [1, 2], []]))
    for r in (empty1, empty2):
        each = step_row(conn, r, "each")
        assert (each["status"], each["output"], each["initial_tasks"]) == ("completed", [], 0)
        assert step_statuses(conn, r) == {"each": "completed", "after": "started"}
        assert [(t["step_slug"], t["task_index"]) for t in tasks(conn, r)] == [("after", 0)]
        assert run_row(conn, r)["remaining_steps"] == 1
    assert step_statuses(conn, full) == {"each": "started", "after": "created"}
    assert [(t["step_slug"], t["task_index"]) for t in tasks(conn, full)] == [
        ("each", 0), ("each", 1)]
    claims = claim(conn, "em")
    assert sorted((str(c.run_id), c.step_slug, c.input) for c in claims) == sorted(
        [(str(empty1), "after", {"each": []}), (str(empty2), "after", {"each": []}),
         (str(full), "each", 1), (str(full), "each", 2)])

    # A flow that is only the map: the empty runs are complete when returned.
    define(conn, "only", {"each": []}, maps=("each",))
    rows = start_many(conn, "only", [[], [5], []])
    assert [(r["status"], r["output"]) for r in rows] == [
        ("completed", {"each": []}), ("started", None), ("completed", {"each": []})]
    assert [len(tasks(conn, r)) for r in ids(rows)] == [0, 1, 0]
    assert queue_count(conn, "only") == 1
    assert_invariants(conn, "em")
    assert_invariants(conn, "only")


def test_a_dag_queues_only_its_root_tasks(conn: psycopg.Connection) -> None:
    define(conn, "dag", {"a": [], "z": [], "b": ["a"], "c": ["a", "b"], "d": ["c", "z"]})
    inputs = [{"n": n} for n in range(5)]
    rows = start_many(conn, "dag", inputs)
    for r in ids(rows):
        assert step_statuses(conn, r) == {"a": "started", "z": "started", "b": "created",
                                          "c": "created", "d": "created"}
        assert [step_row(conn, r, s)["remaining_deps"] for s in "abcdz"] == [0, 1, 2, 2, 0]
        assert [t["step_slug"] for t in tasks(conn, r)] == ["a", "z"]
        assert messages_of(conn, "dag", r) == [("a", 0), ("z", 0)]
    assert queue_count(conn, "dag") == 10
    claims = claim(conn, "dag", batch_size=100)
    assert sorted((str(c.run_id), c.step_slug) for c in claims) == sorted(
        (str(r), s) for r in ids(rows) for s in "az")
    assert all(c.input == inputs[ids(rows).index(c.run_id)] and c.flow_input is None
               for c in claims)

    # The runs go on one by one: a's completion starts b in its run only.
    (a0,) = (c for c in claims if c.run_id == rows[0]["run_id"] and c.step_slug == "a")
    assert complete(conn, a0, "A")
    (b0,) = claim(conn, "dag")
    assert (b0.run_id, b0.step_slug, b0.input) == (rows[0]["run_id"], "b", {"a": "A"})
    assert_invariants(conn, "dag")


def test_a_start_delay_holds_every_runs_first_message(conn: psycopg.Connection) -> None:
    define(conn, "later", {"a": [], "b": [], "c": ["a"]})
    conn.execute("SELECT flowworker.add_step('later', 'a', start_delay => 30)")
    with conn.transaction():
        rows = start_many(conn, "later", [{}, {}, {}])
        for r in ids(rows):
            delays = {t["step_slug"]: visible_in(conn, "later", t["message_id"])
                      for t in tasks(conn, r)}
            assert delays == {"a": 30, "b": 0}
    assert sorted((str(c.run_id), c.step_slug) for c in claim(conn, "later")) == sorted(
        (str(r), "b") for r in ids(rows))
    assert_invariants(conn, "later")


def test_root_single_and_root_map_steps_start_side_by_side(conn: psycopg.Connection) -> None:
    define(conn, "mixed", {"one": [], "each": [], "end": ["one", "each"]}, maps=("each",))
    rows = start_many(conn, "mixed", [[1, 2], [], [3]])
    expected = [({"one": "started", "each": "started", "end": "created"}, 2),
                ({"one": "started", "each": "completed", "end": "created"}, 0),
                ({"one": "started", "each": "started", "end": "created"}, 1)]
    for r, (statuses, each_tasks) in zip(ids(rows), expected, strict=True):
        assert step_statuses(conn, r) == statuses
        one, each = step_row(conn, r, "one"), step_row(conn, r, "each")
        assert (one["initial_tasks"], one["remaining_tasks"]) == (1, 1)
        assert each["initial_tasks"] == each_tasks
        assert step_row(conn, r, "end")["remaining_deps"] == (2 if each_tasks else 1)
    assert queue_count(conn, "mixed") == 3 + 3
    assert_invariants(conn, "mixed")


def test_root_tasks_are_queued_in_input_order(conn: psycopg.Connection) -> None:
    define(conn, "fifo", {"a": [], "b": [], "c": ["a"]})
    rows = start_many(conn, "fifo", [{"n": n} for n in range(20)])
    queued = conn.execute(
        sql.SQL("SELECT (message->>'run_id')::uuid, message->>'step_slug' FROM {}"
                " ORDER BY msg_id").format(queue_table("fifo"))).fetchall()
    assert queued == [(r, s) for r in ids(rows) for s in "ab"]
    assert_invariants(conn, "fifo")
