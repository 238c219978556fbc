"""The invariant checker itself can fail: each of its checks is broken on
purpose in a database of its own and the checker must name it."""

from __future__ import annotations

import psycopg
import pytest

from tests.acceptance.harness import Database, apply_flows, wait_until
from tests.sql.helpers import assert_invariants
from tests.support.database import PgServer
from tests.support.invariants import (
    EXPIRED_CLAIMS,
    QUERIES,
    QUEUE_QUERIES,
    IdleInTransactionSampler,
    check_invariants,
)

pytestmark = pytest.mark.acceptance

# A `diamond` run just started: `prepare` has one queued task, the rest wait.
TASK = "UPDATE flowworker.step_tasks SET {} WHERE run_id = %(run)s AND step_slug = 'prepare'"
STEP = "UPDATE flowworker.step_states SET {} WHERE run_id = %(run)s AND step_slug = '{}'"
RUN = "UPDATE flowworker.runs SET {} WHERE run_id = %(run)s"
HIDE = "UPDATE flowworker.q_diamond SET vt = now() + interval '1 hour'"

# check (a label of tests/support/invariants.py) -> statements that break it
CORRUPTIONS = {
    "I1 task started past its claim deadline + grace": [
        TASK.format("status = 'started', attempts_count = 1"),
        "UPDATE flowworker.q_diamond SET vt = now() - interval '1 minute'"],
    "I2 step remaining_tasks/initial_tasks differ from its task rows": [
        STEP.format("remaining_tasks = 2", "prepare")],
    "I2 step remaining_deps differs from its unfinished deps": [
        STEP.format("remaining_deps = 0", "summarize")],
    "I2 run remaining_steps differs from its unfinished steps": [
        RUN.format("remaining_steps = remaining_steps + 1")],
    "I2 completed step with unfinished tasks": [STEP.format("status = 'completed'", "prepare")],
    "I2 completed run with unfinished steps": [RUN.format("status = 'completed'")],
    "I2 finished run with a task or step still to do": [RUN.format("status = 'failed'")],
    "I3 unfinished run with no message, no claim and no waiting step": [
        "DELETE FROM flowworker.q_diamond"],
    "I3 unfinished task without its message": ["DELETE FROM flowworker.q_diamond"],
    "I4 completed single step whose output is not its task's output": [
        STEP.format("status = 'completed', output = '1'", "prepare")],
    "I4 completed map step whose output is not its tasks' outputs in order": [
        STEP.format("status = 'completed', output = '[1]'", "square")],
    "I4 completed task without completed_at": [TASK.format("status = 'completed', output = '1'")],
    "I5 message left for a finished task": [TASK.format("status = 'cancelled'")],
    "I6 attempts_count > max_attempts": [TASK.format("attempts_count = 4")],
}
# Other ways to break a check than the one above.
MORE_CORRUPTIONS = {
    "I2 step remaining_tasks/initial_tasks differ from its task rows": [
        [STEP.format("status = 'started'", "left")],  # started, tasks never counted
        [STEP.format("initial_tasks = 3", "prepare")]],
    "I5 message left for a finished task": [
        [TASK.format("status = 'failed'"), HIDE]],  # hidden from claims, still there
}
CASES = [(label, statements) for label, statements in CORRUPTIONS.items()] + [
    (label, statements) for label, more in MORE_CORRUPTIONS.items() for statements in more]


def test_every_check_has_a_corruption() -> None:
    assert set(CORRUPTIONS) == {*QUERIES, *QUEUE_QUERIES, *EXPIRED_CLAIMS}


def corrupted(pg_server: PgServer, statements: list[str]) -> tuple[list[str], list[str]]:
    """(what the checker finds in a fresh run, what it finds once broken);
    the SQL tier's assert_invariants is run on the broken database too."""
    with pg_server.fresh_database() as url:
        apply_flows(url)
        db = Database(url)
        try:
            run = db.start_run("diamond", {"n": 1})
            before = check_invariants(db.conn)
            for statement in statements:
                db.conn.execute(statement.encode(), {"run": run})
            after = check_invariants(db.conn)
            try:
                assert_invariants(db.conn, "diamond")
                after.append("SQL tier: assert_invariants passed")
            except AssertionError:
                pass
        finally:
            db.close()
    return before, after


@pytest.mark.parametrize(("check", "statements"), CASES, ids=[case[0] for case in CASES])
def test_checker_names_a_broken_invariant(check: str, statements: list[str],
                                          pg_server: PgServer) -> None:
    before, after = corrupted(pg_server, statements)
    assert before == [], "a fresh run breaks nothing"
    assert any(p.startswith(check) for p in after), after
    # Nothing re-claims in the SQL tier: it does not check I1 (expired claims).
    assert ("SQL tier: assert_invariants passed" in after) == check.startswith("I1"), after


def test_sampler_sees_a_backend_idle_in_transaction(pg_server: PgServer) -> None:
    with pg_server.fresh_database() as url, IdleInTransactionSampler(url, limit=0.3) as sampler:
        with psycopg.connect(url) as idle:
            idle.execute("SELECT 1")  # opens a transaction and leaves it open
            wait_until(lambda: sampler.seen, timeout=5, message="the sampler to see it")
            idle.rollback()
        assert sampler.problems()[0].startswith("I7")
