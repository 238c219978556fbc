"""RELIABILITY R1 and R2: bad signals and bad steering, through the client
as an operator login (flowworker_operator) would send them.

R1: a signal with a wrong token, a token of an earlier wait of the run, to
an unknown run or step, to a step that is not a wait step, to a wait that
does not wait yet, to a run that is over (cancelled, failed by its
deadline), a payload over max_output_bytes, a gate's payload without one of
its options. R2: retry of a run that is started, paused or completed;
pause or resume of a finished run; an unknown run or flow.

Each is one error naming what is wrong, with the client's class for its
SQLSTATE, and changes nothing: every row of every run (state, tasks,
messages, history) is as it was, and the invariants hold. A repeated signal
and a signal to a completed run are no error: 'already'.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from flowworker.client import (
    cancel_run,
    pause_flow,
    pause_run,
    resume_run,
    retry_run,
    signal,
    signal_token,
)
from flowworker.errors import (
    FlowworkerError,
    InvalidInputError,
    RunStateError,
    UnknownFlowError,
    UnknownRunError,
    UnknownStepError,
)
from tests.faults.sql.conftest import login_roles
from tests.faults.sql.lifecycle import (
    deadline_msg,
    define_wait,
    snapshot,
    wait_token,
    waiting_runs,
)
from tests.sql.helpers import assert_invariants, claim, complete, expire, start
from tests.support.database import PgServer

FLOW, GATE = "w", "g"


@dataclass(frozen=True)
class Scene:
    """Runs at each point a bad call may meet."""

    waiting: uuid.UUID  # hook waits
    created: uuid.UUID  # a not completed yet: hook does not wait
    cancelled: uuid.UUID
    timed_out: uuid.UUID  # failed: its wait's deadline passed
    completed: uuid.UUID
    paused: uuid.UUID
    gate: uuid.UUID  # an approval gate waiting
    old_token: uuid.UUID  # the token of `waiting`'s wait before a retry


@pytest.fixture
def scene(conn: psycopg.Connection) -> Scene:
    define_wait(conn, FLOW, timeout=3600)
    define_wait(conn, GATE, options=["approve", "reject"], fail_on=["reject"])
    waiting, cancelled, timed_out, completed, paused = waiting_runs(conn, FLOW, 5)
    (gate,) = waiting_runs(conn, GATE, 1)
    created = start(conn, FLOW, {"i": "created"})

    # `waiting` waited once before: cancelled and retried, it waits with a new token.
    old_token = wait_token(conn, waiting)
    conn.execute("SELECT flowworker.cancel_run(%s, 'to retry')", (waiting,))
    conn.execute("SELECT flowworker.retry_run(%s)", (waiting,))
    assert wait_token(conn, waiting) != old_token

    conn.execute("SELECT flowworker.cancel_run(%s, 'no longer wanted')", (cancelled,))
    expire(conn, FLOW, [deadline_msg(conn, timed_out)])
    conn.execute("SELECT flowworker.signal(%s, 'hook', '{}')", (completed,))
    conn.execute("SELECT flowworker.pause_run(%s)", (paused,))
    [b] = [c for c in claim(conn, FLOW, batch_size=10) if c.run_id == completed]
    assert complete(conn, b, "done")
    statuses: dict[uuid.UUID, str] = dict(
        conn.execute("SELECT run_id, status FROM flowworker.runs").fetchall())
    assert [statuses[r] for r in (waiting, created, cancelled, timed_out, completed, paused,
                                  gate)] == ["started", "started", "cancelled", "failed",
                                             "completed", "paused", "started"]
    return Scene(waiting, created, cancelled, timed_out, completed, paused, gate, old_token)


@pytest.fixture
def operator(pg_server: PgServer, db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection of a login in flowworker_operator."""
    with login_roles(pg_server, db_url, {"ops": "operator"}) as logins, \
            logins.connect("ops") as ops:
        yield ops


Call = Callable[[psycopg.Connection, Scene], Any]
BIG = {"blob": os.urandom(600_000).hex()}  # 1.2 MB, incompressible: over max_output_bytes

R1 = {
    "wrong token": (lambda c, s: signal_token(c, uuid.uuid4(), {}),
                    UnknownStepError, "no step waits with token"),
    "token of an earlier wait": (lambda c, s: signal_token(c, s.old_token, {}),
                                 UnknownStepError, "no step waits with token"),
    "unknown run": (lambda c, s: signal(c, uuid.uuid4(), "hook", {}),
                    UnknownRunError, r"run [0-9a-f-]+ does not exist"),
    "unknown step": (lambda c, s: signal(c, s.waiting, "ghost", {}),
                     UnknownStepError, "flow 'w' has no step 'ghost'"),
    "not a wait step": (lambda c, s: signal(c, s.waiting, "a", {}),
                        InvalidInputError, "step 'a' of flow 'w' is a single step, not a wait"),
    "before it waits": (lambda c, s: signal(c, s.created, "hook", {}),
                        RunStateError, "is created, not waiting: it waits once the steps it "
                                       "depends on complete; signal it then"),
    "cancelled run": (lambda c, s: signal(c, s.cancelled, "hook", {}),
                      RunStateError, "is cancelled: step 'hook' can no longer be signalled"),
    "run failed by its deadline": (lambda c, s: signal(c, s.timed_out, "hook", {}),
                                   RunStateError, "is failed: step 'hook' can no longer be"),
    "payload over the limit": (lambda c, s: signal(c, s.waiting, "hook", BIG),
                               InvalidInputError, r"the signal for step 'hook' is \d+ bytes, "
                                                  r"over the limit of 1048576 bytes"),
    "gate without an option": (lambda c, s: signal(c, s.gate, "hook", {"note": "ok"}),
                               InvalidInputError, "must be one of approve, reject, not missing"),
}
R2 = {
    "retry a started run": (lambda c, s: retry_run(c, s.waiting), RunStateError,
                            "is started: only a run that is failed or cancelled can be retried"),
    "retry a paused run": (lambda c, s: retry_run(c, s.paused), RunStateError, "is paused"),
    "retry a completed run": (lambda c, s: retry_run(c, s.completed), RunStateError,
                              "is completed"),
    "pause a completed run": (lambda c, s: pause_run(c, s.completed), RunStateError,
                              "is completed: only a run that is started or paused can be paused"),
    "pause a cancelled run": (lambda c, s: pause_run(c, s.cancelled), RunStateError,
                              "is cancelled"),
    "resume a failed run": (lambda c, s: resume_run(c, s.timed_out), RunStateError,
                            "is failed: only a run that is started or paused can be resumed"),
    "pause an unknown run": (lambda c, s: pause_run(c, uuid.uuid4()), UnknownRunError,
                             "does not exist"),
    "retry an unknown run": (lambda c, s: retry_run(c, uuid.uuid4()), UnknownRunError,
                             "does not exist"),
    "pause an unknown flow": (lambda c, s: pause_flow(c, "ghost"), UnknownFlowError,
                              "flow 'ghost' does not exist"),
}


def everything(conn: psycopg.Connection, scene: Scene) -> dict[str, Any]:
    runs = [(FLOW, r) for r in (scene.waiting, scene.created, scene.cancelled, scene.timed_out,
                                scene.completed, scene.paused)] + [(GATE, scene.gate)]
    return {f"{flow} {run_id}": snapshot(conn, flow, run_id) for flow, run_id in runs}


def refused(conn: psycopg.Connection, operator: psycopg.Connection, scene: Scene, call: Call,
            error: type[FlowworkerError], match: str) -> None:
    before = everything(conn, scene)
    with pytest.raises(error, match=match) as raised:
        call(operator, scene)
    assert "\n" not in str(raised.value), "one line"
    assert everything(conn, scene) == before, "a refused call changed something"
    assert_invariants(conn, FLOW)
    assert_invariants(conn, GATE)


@pytest.mark.parametrize("case", list(R1))
def test_r1_a_bad_signal_is_one_error_and_changes_nothing(
        conn: psycopg.Connection, operator: psycopg.Connection, scene: Scene, case: str) -> None:
    refused(conn, operator, scene, *R1[case])


@pytest.mark.parametrize("case", list(R2))
def test_r2_bad_steering_is_one_error_and_changes_nothing(
        conn: psycopg.Connection, operator: psycopg.Connection, scene: Scene, case: str) -> None:
    refused(conn, operator, scene, *R2[case])


def test_r1_a_repeated_signal_or_one_to_a_completed_run_answers_already(
        conn: psycopg.Connection, operator: psycopg.Connection, scene: Scene) -> None:
    assert signal(operator, scene.waiting, "hook", {"n": 1}) == "signalled"
    before = everything(conn, scene)
    assert signal(operator, scene.waiting, "hook", {"n": 2}) == "already"
    assert signal_token(operator, wait_token(conn, scene.waiting), {"n": 3}) == "already"
    assert signal(operator, scene.completed, "hook", {"late": True}) == "already"
    assert everything(conn, scene) == before
    # A paused run takes its signal; what follows waits for resume.
    assert signal(operator, scene.paused, "hook", {"n": 4}) == "signalled"
    assert scene.paused not in {c.run_id for c in claim(conn, FLOW, batch_size=10)}
    assert cancel_run(operator, scene.paused, "done with it").status == "cancelled"
    assert_invariants(conn, FLOW)
