"""The invariant checker itself can fail: each invariant is broken on
purpose in a database of its own and the checker must name it."""

from __future__ import annotations

import psycopg
import pytest

from tests.acceptance.harness import (
    Database,
    IdleInTransactionSampler,
    apply_flows,
    check_invariants,
    wait_until,
)
from tests.support.database import PgServer

pytestmark = pytest.mark.acceptance

CORRUPTIONS = {
    "I1": """UPDATE flowworker.step_tasks SET status = 'started', attempts_count = 1
             WHERE run_id = %(run)s AND step_slug = 'prepare';
             UPDATE flowworker.q_diamond SET vt = now() - interval '1 minute'""",
    "I2": """UPDATE flowworker.step_states SET remaining_deps = 0
             WHERE run_id = %(run)s AND step_slug = 'summarize'""",
    "I3": """DELETE FROM flowworker.q_diamond""",
    "I4": """UPDATE flowworker.step_tasks SET status = 'completed', output = '1'
             WHERE run_id = %(run)s AND step_slug = 'prepare'""",
    "I5": """UPDATE flowworker.step_tasks SET status = 'cancelled'
             WHERE run_id = %(run)s AND step_slug = 'prepare'""",
    "I6": """UPDATE flowworker.step_tasks SET attempts_count = 4
             WHERE run_id = %(run)s AND step_slug = 'prepare'""",
}


@pytest.mark.parametrize("invariant", sorted(CORRUPTIONS))
def test_checker_names_a_broken_invariant(invariant: str, pg_server: PgServer) -> None:
    with pg_server.fresh_database() as url:
        apply_flows(url)
        db = Database(url)
        try:
            run = db.start_run("diamond", {"n": 1})
            assert not check_invariants(db.conn), "a fresh run breaks nothing"
            for statement in CORRUPTIONS[invariant].split(";"):
                db.conn.execute(statement.encode(), {"run": run})
            problems = check_invariants(db.conn)
        finally:
            db.close()
    assert any(p.startswith(invariant) for p in problems), problems


def test_sampler_sees_a_backend_idle_in_transaction(pg_server: PgServer) -> None:
    with pg_server.fresh_database() as url, IdleInTransactionSampler(url, limit=0.3) as sampler:
        with psycopg.connect(url) as idle:
            idle.execute("SELECT 1")  # opens a transaction and leaves it open
            wait_until(lambda: sampler.seen, timeout=5, message="the sampler to see it")
            idle.rollback()
        assert sampler.problems()[0].startswith("I7")
