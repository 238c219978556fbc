"""RELIABILITY R3-R5: the run-lifecycle races, forced 200 rounds each (the
D10 harness: the parties of a round are released together by a barrier,
each on a connection of its own).

R3 two signals at once, one by run and step, one by token: exactly one
   applies ('signalled', its payload the output), the other answers
   'already'; the step after the wait starts once; both parties won some.
R4 a signal against the wait's deadline: the deadline message is made due
   as the round starts, and a claim (which times a wait out) races the
   signal. Exactly one outcome: the signal applied and the run goes on (the
   deadline found nothing to do), or the wait timed out, the run failed, and
   the signal was refused (55000 naming the failed run). Never both.
R5 pause_run against claims. A claimer calls start_tasks again and again;
   what must hold, precisely: a start_tasks call that began after pause_run
   had returned (committed) gets none of the run's tasks. A call concurrent
   with the pause may get them: those tasks are "already running". Their
   claims are parked with what was left of them (paused_delay is the claim's
   remaining span, not the 0 of a queued task), so after resume_run no other
   claim takes a task its holder still runs. Every unfinished task of the
   paused run has its message hidden (vt 'infinity').

In all three no error other than the refused signal reaches a caller, the
server counts no deadlock, and the invariants hold.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.faults.sql.lifecycle import deadline_msg, define_wait, wait_token, waiting_runs
from tests.faults.sql.test_d10_forced_races import race, report
from tests.sql.helpers import (
    Claim,
    assert_invariants,
    claim,
    deadlocks,
    define,
    queue_table,
    start,
)

ROUNDS = 200


def flushed_deadlocks(conn: psycopg.Connection) -> int:
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return deadlocks(conn)


def signal_sql(c: psycopg.Connection, run_id: uuid.UUID, payload: Any) -> str:
    row = c.execute("SELECT flowworker.signal(%s, 'hook', %s)", (run_id, Jsonb(payload)))
    result = row.fetchone()
    assert result is not None
    answer: str = result[0]
    return answer


def test_r3_two_signals_at_once_apply_once(conn: psycopg.Connection, db_url: str) -> None:
    define_wait(conn, "s2")
    runs = waiting_runs(conn, "s2", ROUNDS)
    tokens = [wait_token(conn, r) for r in runs]
    before = flushed_deadlocks(conn)

    def by_step(c: psycopg.Connection, r: int) -> str:
        return signal_sql(c, runs[r], {"by": "step", "round": r})

    def by_token(c: psycopg.Connection, r: int) -> str:
        row = c.execute("SELECT flowworker.signal_token(%s, %s)",
                        (tokens[r], Jsonb({"by": "token", "round": r}))).fetchone()
        assert row is not None
        answer: str = row[0]
        return answer

    began = time.perf_counter()
    steps, toks = race(db_url, ROUNDS, [by_step, by_token])
    elapsed = time.perf_counter() - began

    outputs: dict[uuid.UUID, Any] = dict(conn.execute(
        "SELECT run_id, output FROM flowworker.step_states "
        "WHERE flow_slug = 's2' AND step_slug = 'hook'").fetchall())
    won: Counter[str] = Counter()
    for r in range(ROUNDS):
        assert sorted([steps[r], toks[r]]) == ["already", "signalled"], r
        winner = "step" if steps[r] == "signalled" else "token"
        won[winner] += 1
        assert outputs[runs[r]] == {"by": winner, "round": r}, r
    b_tasks = conn.execute("SELECT run_id, count(*) FROM flowworker.step_tasks "
                           "WHERE flow_slug = 's2' AND step_slug = 'b' GROUP BY run_id").fetchall()
    assert sorted(b_tasks) == sorted((r, 1) for r in runs), "the step after the wait started twice"
    events = conn.execute("SELECT count(*) FROM flowworker.events "
                          "WHERE event = 'step.signalled' AND run_id = ANY(%s)", (runs,)).fetchone()
    assert events == (ROUNDS,)
    assert len(claim(conn, "s2", batch_size=2 * ROUNDS)) == ROUNDS
    report(f"\nR3 two signals: {ROUNDS} rounds in {elapsed:.1f} s; won by step {won['step']}, "
           f"by token {won['token']}")
    assert won["step"], "the race never went both ways"
    assert won["token"], "the race never went both ways"
    assert flushed_deadlocks(conn) == before
    assert_invariants(conn, "s2")


def test_r4_a_signal_against_the_wait_deadline_has_one_outcome(
        conn: psycopg.Connection, db_url: str) -> None:
    define_wait(conn, "sd", timeout=3600)
    runs = waiting_runs(conn, "sd", ROUNDS)
    deadlines = [deadline_msg(conn, r) for r in runs]
    before = flushed_deadlocks(conn)
    due = sql.SQL("UPDATE {} SET vt = now() WHERE msg_id = %s").format(queue_table("sd"))

    with psycopg.connect(db_url, autocommit=True) as clock:
        def make_due(r: int) -> None:
            clock.execute(due, (deadlines[r],))

        def send(c: psycopg.Connection, r: int) -> str:
            try:
                return signal_sql(c, runs[r], {"round": r})
            except psycopg.errors.ObjectNotInPrerequisiteState as exc:
                return f"refused: {exc.diag.message_primary}"

        def claimer(c: psycopg.Connection, r: int) -> list[Claim]:
            return claim(c, "sd", batch_size=10)

        began = time.perf_counter()
        sent, claimed = race(db_url, ROUNDS, [send, claimer], before_round=make_due)
        elapsed = time.perf_counter() - began

    rows = {r: (s, e) for r, s, e in conn.execute(
        "SELECT run_id, status, error_message FROM flowworker.runs WHERE flow_slug = 'sd'")}
    hooks: dict[uuid.UUID, str] = dict(conn.execute(
        "SELECT run_id, status FROM flowworker.step_states "
        "WHERE flow_slug = 'sd' AND step_slug = 'hook'").fetchall())
    outcome: Counter[str] = Counter()
    for r, run_id in enumerate(runs):
        if sent[r] == "signalled":
            outcome["signal"] += 1
            assert rows[run_id] == ("started", None), r
            assert hooks[run_id] == "completed", r
        else:
            outcome["timeout"] += 1
            assert sent[r] == f"refused: run {run_id} is failed: step 'hook' can no longer be " \
                              "signalled", r
            assert rows[run_id] == ("failed", "step hook failed: timed out after 3600 s "
                                              "without a signal"), r
            assert hooks[run_id] == "timed_out", r
    # The claims only ever got the step after a signalled wait (of this round
    # or, when the claim came first then, of an earlier one), once each.
    b_claims = Counter(c.run_id for got in claimed for c in got)
    # A round the claim lost left the deadline message to the signal, which
    # archived it: nothing is left to time out later.
    timed_out = conn.execute("SELECT count(*) FROM flowworker.events WHERE event = "
                             "'step.timed_out'").fetchone()
    signalled = conn.execute("SELECT count(*) FROM flowworker.events WHERE event = "
                             "'step.signalled'").fetchone()
    assert (timed_out, signalled) == ((outcome["timeout"],), (outcome["signal"],))
    b_claims.update(c.run_id for c in claim(conn, "sd", batch_size=2 * ROUNDS))
    assert {c.step_slug for got in claimed for c in got} <= {"b"}
    assert b_claims == Counter(r for i, r in enumerate(runs) if sent[i] == "signalled")
    report(f"\nR4 signal vs deadline: {ROUNDS} rounds in {elapsed:.1f} s; the signal won "
           f"{outcome['signal']}, the deadline {outcome['timeout']}")
    assert outcome["signal"], "the race never went both ways"
    assert outcome["timeout"], "the race never went both ways"
    assert flushed_deadlocks(conn) == before
    assert_invariants(conn, "sd")


TASKS = 4  # per run: a root map of 4 elements


def test_r5_no_claim_that_begins_after_pause_run_committed_gets_the_run(
        conn: psycopg.Connection, db_url: str) -> None:
    define(conn, "pc", {"each": []}, maps=("each",), timeout=60)
    runs: list[uuid.UUID] = []
    before = flushed_deadlocks(conn)

    def start_one(r: int) -> None:
        """The round's run: the only one whose tasks are claimable (the
        earlier ones are paused)."""
        runs.append(start(conn, "pc", list(range(TASKS))))
    paused = [threading.Event() for _ in range(ROUNDS)]

    def pause(c: psycopg.Connection, r: int) -> None:
        c.execute("SELECT flowworker.pause_run(%s)", (runs[r],))
        paused[r].set()  # after the commit (autocommit)

    def claimer(c: psycopg.Connection, r: int) -> list[tuple[bool, list[Claim]]]:
        calls = []
        while True:
            after_pause = paused[r].is_set()
            calls.append((after_pause, claim(c, "pc", batch_size=1)))
            if after_pause:
                return calls

    began = time.perf_counter()
    _, calls = race(db_url, ROUNDS, [pause, claimer], before_round=start_one)
    elapsed = time.perf_counter() - began

    claimed_per_round = []
    for r, run_id in enumerate(runs):
        got = [c for after, claims in calls[r] for c in claims]
        assert {c.run_id for c in got} <= {run_id}, r
        late = [c for after, claims in calls[r] if after for c in claims]
        assert late == [], f"round {r}: claimed after pause_run committed: {late}"
        claimed_per_round.append(len(got))
        check_parked(conn, run_id, {c.task_index for c in got})

    spread = Counter(claimed_per_round)
    report(f"\nR5 pause vs claim: {ROUNDS} rounds in {elapsed:.1f} s; tasks claimed before "
           f"the pause took effect, per round: {dict(sorted(spread.items()))}")
    # Which came first is up to the scheduler (on a loaded machine one order
    # can win every round): the spread is reported, the outcome asserted.
    assert flushed_deadlocks(conn) == before
    assert claim(conn, "pc", batch_size=10 * ROUNDS) == [], "a paused run was claimed"
    assert_invariants(conn, "pc")


def check_parked(conn: psycopg.Connection, run_id: uuid.UUID, claimed: set[int]) -> None:
    """Every unfinished task of the paused run is hidden; a claimed one keeps
    the rest of its claim (60 s timeout + 5 s grace) for after resume."""
    rows = conn.execute(sql.SQL(
        "SELECT t.task_index, t.status, t.paused_delay, q.vt = 'infinity' FROM "
        "flowworker.step_tasks t JOIN {} q ON q.msg_id = t.message_id "
        "WHERE t.run_id = %s ORDER BY t.task_index").format(queue_table("pc")),
        (run_id,)).fetchall()
    assert [row[0] for row in rows] == list(range(TASKS)), rows
    for index, status, delay, hidden in rows:
        assert hidden, (run_id, index)
        if index in claimed:
            assert status == "started", (run_id, index)
            assert delay > timedelta(seconds=60), (run_id, index, delay)
        else:
            assert (status, delay) == ("queued", timedelta(0)), (run_id, index)
