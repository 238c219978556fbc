"""Wait steps, signals and approval gates: a ready wait step waits with a
fresh token; a signal (by run and step, or by token) completes it with its
payload as output and starts its dependents at once; a repeated signal
answers 'already'; an early one is an error; a wait past its timeout fails
the run naming the step; a gate takes only its options and fails the run on
those in fail_on."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.sql.helpers import (
    assert_invariants,
    claim,
    complete,
    expire,
    run_row,
    start,
    step_row,
    step_statuses,
    tasks,
)


def define_wait(conn: psycopg.Connection, flow: str, *, timeout: int | None = None,
                options: list[str] | None = None, fail_on: list[str] | None = None) -> None:
    """a -> approval (wait) -> b"""
    conn.execute("SELECT flowworker.create_flow(%s)", (flow,))
    conn.execute("SELECT flowworker.add_step(%s, 'a')", (flow,))
    conn.execute("SELECT flowworker.add_step(%s, 'approval', deps => '{a}', step_type => 'wait', "
                 "timeout => %s, options => %s, fail_on => %s)", (flow, timeout, options, fail_on))
    conn.execute("SELECT flowworker.add_step(%s, 'b', deps => '{approval}')", (flow,))


def signal(conn: psycopg.Connection, run_id: uuid.UUID, payload: Any,
           step: str = "approval") -> str:
    row = conn.execute("SELECT flowworker.signal(%s, %s, %s)",
                       (run_id, step, Jsonb(payload))).fetchone()
    assert row is not None
    result: str = row[0]
    return result


def waiting_run(conn: psycopg.Connection, flow: str) -> uuid.UUID:
    run_id = start(conn, flow)
    (a,) = claim(conn, flow)
    assert complete(conn, a, {"amount": 10})
    return run_id


def test_a_signal_completes_the_wait_and_starts_its_dependents(
        conn: psycopg.Connection) -> None:
    define_wait(conn, "w")
    run_id = start(conn, "w")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState,
                       match="is created, not waiting: it waits once the steps it depends on "
                             "complete"):
        signal(conn, run_id, {"early": True})
    (a,) = claim(conn, "w")
    assert complete(conn, a, {"amount": 10})
    state = step_row(conn, run_id, "approval")
    assert state["status"] == "waiting"
    assert state["wait_token"] is not None
    assert claim(conn, "w") == [], "a wait step has no task for a worker"

    assert signal(conn, run_id, {"ok": True, "by": "bank"}) == "signalled"
    assert signal(conn, run_id, {"ok": False}) == "already"
    (b,) = claim(conn, "w")
    assert b.input == {"approval": {"ok": True, "by": "bank"}}
    assert complete(conn, b, "shipped")
    assert run_row(conn, run_id)["status"] == "completed"
    assert_invariants(conn, "w")


def test_a_signal_by_token(conn: psycopg.Connection) -> None:
    define_wait(conn, "w")
    run_id = waiting_run(conn, "w")
    token = step_row(conn, run_id, "approval")["wait_token"]
    row = conn.execute("SELECT flowworker.signal_token(%s, %s)", (token, Jsonb({"t": 1})))
    assert row.fetchone() == ("signalled",)
    assert step_row(conn, run_id, "approval")["output"] == {"t": 1}
    with pytest.raises(psycopg.errors.UndefinedObject, match="no step waits with token"):
        conn.execute("SELECT flowworker.signal_token(%s, '{}')", (uuid.uuid4(),))


def test_bad_signals_are_errors_naming_what_is_wrong(conn: psycopg.Connection) -> None:
    define_wait(conn, "w")
    run_id = waiting_run(conn, "w")
    with pytest.raises(psycopg.errors.NoDataFound, match="does not exist"):
        signal(conn, uuid.uuid4(), {})
    with pytest.raises(psycopg.errors.UndefinedObject, match="flow 'w' has no step 'ghost'"):
        signal(conn, run_id, {}, step="ghost")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="not a wait step"):
        signal(conn, run_id, {}, step="a")
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        conn.execute("SELECT flowworker.signal(%s, 'approval', '{\"n\": 1e999}')", (run_id,))
    conn.execute("UPDATE flowworker.config SET value = 100 WHERE name = 'max_output_bytes'")
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="the signal for step"):
        signal(conn, run_id, {"blob": "x" * 500})
    assert step_row(conn, run_id, "approval")["status"] == "waiting"
    conn.execute("SELECT flowworker.cancel_run(%s)", (run_id,))
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="is cancelled"):
        signal(conn, run_id, {})


def test_two_signals_at_once_apply_once(conn: psycopg.Connection, db_url: str) -> None:
    define_wait(conn, "w")
    run_id = waiting_run(conn, "w")
    results: list[str] = []
    barrier = threading.Barrier(2)

    def send(n: int) -> None:
        with psycopg.connect(db_url, autocommit=True) as c:
            barrier.wait(timeout=10)
            results.append(signal(c, run_id, {"from": n}))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == ["already", "signalled"]
    assert len(claim(conn, "w")) == 1, "the dependent started once"
    assert_invariants(conn, "w")


def test_a_wait_past_its_timeout_fails_the_run_naming_the_step(
        conn: psycopg.Connection) -> None:
    define_wait(conn, "w", timeout=3600)
    run_id = waiting_run(conn, "w")
    [deadline] = [t for t in tasks(conn, run_id) if t["step_slug"] == "approval"]
    expire(conn, "w", [deadline["message_id"]])  # the deadline comes: an hour later
    assert claim(conn, "w") == []
    run = run_row(conn, run_id)
    assert run["status"] == "failed"
    assert run["error_message"] == "step approval failed: timed out after 3600 s without a signal"
    assert step_statuses(conn, run_id) == {"a": "completed", "approval": "timed_out",
                                           "b": "cancelled"}
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="is failed"):
        signal(conn, run_id, {"late": True})
    assert_invariants(conn, "w")


def test_a_signal_before_the_deadline_wins(conn: psycopg.Connection) -> None:
    define_wait(conn, "w", timeout=3600)
    run_id = waiting_run(conn, "w")
    assert signal(conn, run_id, {"ok": 1}) == "signalled"
    (b,) = claim(conn, "w")
    assert b.step_slug == "b"
    assert run_row(conn, run_id)["status"] == "started"
    assert_invariants(conn, "w")


def test_an_approval_gate_takes_its_options_and_fails_on_rejection(
        conn: psycopg.Connection) -> None:
    define_wait(conn, "g", options=["approve", "reject"], fail_on=["reject"])
    approved = waiting_run(conn, "g")
    for bad in ({}, {"option": "maybe"}):
        with pytest.raises(psycopg.errors.InvalidParameterValue,
                           match="must be one of approve, reject"):
            signal(conn, approved, bad)
    decision = {"option": "approve", "note": "looks fine", "actor": "alice"}
    assert signal(conn, approved, decision) == "signalled"
    (b,) = claim(conn, "g")
    assert b.input == {"approval": decision}
    event = conn.execute("SELECT detail, actor FROM flowworker.events "
                         "WHERE run_id = %s AND event = 'step.signalled'", (approved,)).fetchone()
    assert event == ({"option": "approve"}, "alice")

    rejected = waiting_run(conn, "g")
    assert signal(conn, rejected, {"option": "reject", "note": "fraud"}) == "signalled"
    run = run_row(conn, rejected)
    assert (run["status"], run["error_message"]) == (
        "failed", "step approval failed: reject: fraud")
    assert_invariants(conn, "g")


def test_gate_definitions_are_checked(conn: psycopg.Connection) -> None:
    conn.execute("SELECT flowworker.create_flow('g')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="belong to wait steps"):
        conn.execute("SELECT flowworker.add_step('g', 's', options => '{x}')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="fail_on must be some"):
        conn.execute("SELECT flowworker.add_step('g', 's', step_type => 'wait', "
                     "options => '{x}', fail_on => '{y}')")


def test_a_root_wait_waits_from_the_start_and_a_paused_run_takes_signals(
        conn: psycopg.Connection) -> None:
    conn.execute("SELECT flowworker.create_flow('rw')")
    conn.execute("SELECT flowworker.add_step('rw', 'hook', step_type => 'wait')")
    conn.execute("SELECT flowworker.add_step('rw', 'after', deps => '{hook}')")
    run_id = start(conn, "rw")
    assert step_row(conn, run_id, "hook")["status"] == "waiting"
    conn.execute("SELECT flowworker.pause_run(%s)", (run_id,))
    assert signal(conn, run_id, {"v": 1}, step="hook") == "signalled"
    assert claim(conn, "rw") == [], "the dependent waits for resume"
    conn.execute("SELECT flowworker.resume_run(%s)", (run_id,))
    (after,) = claim(conn, "rw")
    assert after.input == {"hook": {"v": 1}}
    assert_invariants(conn, "rw")
